"""Run the benchmarks and write benchmarks/RESULTS.md.

python -m benchmarks.run                    # everything (a few minutes on 2 cores)
python -m benchmarks.run generator rnn      # some of them; the other sections of RESULTS.md are kept
python -m benchmarks.run --quick            # fewer repeats, shorter measurements
python -m benchmarks.run --list
"""

from __future__ import annotations

import os

# Before torch (and with it libgomp) is loaded: idle OpenMP threads sleep instead of spinning. With the
# default (spinning) policy, 2 torch threads on a machine whose other core is busy run 10-100x slower
# than 1 (see the `threads` benchmark), which would make the 2-thread measurements depend on whatever
# else runs. Benchmarks that compare the policies set them explicitly in their child processes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

from benchmarks.common import Section, load_average, write_results  # noqa: E402

# name -> (module, function): imported lazily so that `--list` and one benchmark start quickly
BENCHMARKS: dict[str, tuple[str, str]] = {
    "generator": ("benchmarks.generator", "generator_throughput"),
    "generator_share": ("benchmarks.generator", "generator_share"),
    "throughput": ("benchmarks.training", "throughput"),
    "zoo_speed": ("benchmarks.training", "zoo_speed"),
    "threads": ("benchmarks.training", "thread_policy"),
    "entry_point": ("benchmarks.entry_point", "entry_point"),
    "lightning": ("benchmarks.lightning_overhead", "lightning_overhead"),
    "rnn": ("benchmarks.training", "rnn_scaling"),
    "sweep": ("benchmarks.sweep", "sweep"),
    "startup": ("benchmarks.sweep", "startup"),
    "launch": ("benchmarks.sweep", "launch"),
    "memory": ("benchmarks.training", "attention_memory"),
    "gpu": ("benchmarks.run", "gpu"),
    "demo": ("benchmarks.demo", "demo"),
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
    import pytorch_lightning  # noqa: F401  # sets its loggers' levels on import: quiet them afterwards

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)

    start, sections, peak_load = time.perf_counter(), [], os.getloadavg()[0]
    for name in args.names or list(BENCHMARKS):
        began = time.perf_counter()
        print(f"[{name}] running (load average {load_average()})", flush=True)
        section = _function(name)(args.quick)
        peak_load = max(peak_load, os.getloadavg()[0])
        sections.append(section)
        print("\n".join(section.lines), flush=True)
        print(f"[{name}] {time.perf_counter() - began:.0f} s", flush=True)
    if not args.no_write:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
        path = write_results(sections, command.strip(), time.perf_counter() - start, peak_load)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
