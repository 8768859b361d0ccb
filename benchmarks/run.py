"""Run the benchmarks and write benchmarks/RESULTS.md.

python -m benchmarks.run                    # everything (a few minutes on 2 cores)
python -m benchmarks.run generator rnn      # some of them; the other sections of RESULTS.md are kept
python -m benchmarks.run --quick            # fewer repeats, shorter measurements
python -m benchmarks.run --list
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable

from benchmarks.common import Section, load_average, write_results

# name -> (module, function): imported lazily so that `--list` and one benchmark start quickly
BENCHMARKS: dict[str, tuple[str, str]] = {
    "generator": ("benchmarks.generator", "generator_throughput"),
    "generator_share": ("benchmarks.generator", "generator_share"),
    "throughput": ("benchmarks.training", "throughput"),
    "lightning": ("benchmarks.lightning_overhead", "lightning_overhead"),
    "rnn": ("benchmarks.training", "rnn_scaling"),
    "sweep": ("benchmarks.sweep", "sweep"),
    "startup": ("benchmarks.sweep", "startup"),
    "memory": ("benchmarks.training", "attention_memory"),
    "gpu": ("benchmarks.run", "gpu"),
}


def gpu(quick: bool) -> Section:
    import torch

    section = Section("gpu", "8. GPU")
    if not torch.cuda.is_available():
        section.text(
            "Not measured: no GPU was available to this run (torch.cuda.is_available() is False). On a GPU "
            "machine the same `throughput` table with `trainer=gpu` and mixed precision is the figure to add."
        )
        return section
    section.text(
        f"A GPU is present ({torch.cuda.get_device_name()}) but no GPU benchmark is implemented yet."
    )
    return section


def _function(name: str) -> Callable[[bool], Section]:
    module_name, function = BENCHMARKS[name]
    module = __import__(module_name, fromlist=[function])
    return getattr(module, function)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter measurements")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)

    start, sections = time.perf_counter(), []
    for name in args.names or list(BENCHMARKS):
        began = time.perf_counter()
        print(f"[{name}] running (load average {load_average()})", flush=True)
        section = _function(name)(args.quick)
        sections.append(section)
        print("\n".join(section.lines), flush=True)
        print(f"[{name}] {time.perf_counter() - began:.0f} s", flush=True)
    if not args.no_write:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
        path = write_results(sections, command.strip(), time.perf_counter() - start)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
