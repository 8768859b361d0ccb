"""A model's memory, measured rather than modelled: the same code for every model file, present and future.

:func:`measure` runs the actual ``LongRangeModule`` (embedding, backbone, readout, loss) on a batch of
two random sequences at three lengths (32, 128, 512): one training step (forward and backward), one
inference forward, and the backbone's ``attention_maps`` where it has them. Each run's peak is read from
``torch.profiler`` (public API, ``profile_memory=True``): every allocation and free of torch's CPU
allocator during the run, in time order, summed; the peak of that sum is the most bytes allocated
inside the run and alive at once (:func:`peak_bytes`). Each peak per sample is fitted in L (linear, or
quadratic where the measurements are: :meth:`Growth.fit`) and scales with the batch (:class:`Footprint`).
A new model needs nothing here: its file and YAML are measured like the shipped ones. Results are
cached per (model config, vocabulary size), so a sweep measures each model once (a few tenths of a
second for most models, two to three seconds for a GRU, whose CPU kernel runs several operators per
step, each recorded and exported by the profiler).

What is counted: every tensor allocated by torch on the CPU, operators' internal buffers included (the
input projection inside ``aten::gru`` and ``aten::rnn_tanh`` at inference, oneDNN's buffers inside the
LSTM kernel: counting operators' outputs only, as an earlier tracker did, saw 1.3-12x less for these
three models). Its known error: bytes requested, not resident (a tensor never written counts in full;
the allocator's rounding and fragmentation do not count); nothing allocated outside torch's CPU
allocator (Python objects, a library's own ``malloc``); memory that does not grow with the batch counts
half per sample (measured at batch 2). ``resources.estimate`` turns a footprint into a job's peak
resident memory, its ``CALIBRATION`` covering the difference.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity

from longrange.datasets.base import IGNORE, TaskBatch
from longrange.models.module import LongRangeModule


def peak_bytes(run: Callable[[], Any]) -> int:
    """Peak bytes of CPU memory allocated inside ``run()`` and alive at once.

    ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of torch's CPU
    allocator (address, bytes, time), inside operators and out, forward and backward. Its chrome trace
    (``export_chrome_trace``) lists them one by one as ``[memory]`` events; ``events()`` would not: it
    folds those that fall inside an operator into the operator's total, losing their order. In time order,
    a running sum of the allocations made inside the block, less those of them freed, peaks at the value
    returned. Memory that existed before (parameters, the batch) is not counted, even when freed inside:
    a free counts only for an address allocated inside the block."""
    with (
        _without_stderr(),
        torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler,
    ):
        run()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(path))
        changes = sorted(
            (event["ts"], event["args"].get("Ev Idx", 0), event["args"]["Addr"], event["args"]["Bytes"])
            for event in _memory_events(path.read_text())
            if event["args"].get("Device Type") in CPU
        )
    live: dict[int, int] = {}  # address -> bytes, allocated inside the block and not yet freed
    peak = current = 0
    for _, _, address, size in changes:
        if size > 0:
            current += size - live.get(address, 0)  # (an address reused without its free recorded)
            live[address] = size
            peak = max(peak, current)
        elif address in live:
            current -= live.pop(address)
    return peak


CPU = {0, 2, 5}  # the trace's "Device Type" of CPU memory: c10::DeviceType CPU, MKLDNN, IDEEP


@contextmanager
def _without_stderr() -> Iterator[None]:
    """The profiler's C++ side writes two lines to the process's stderr at each start and stop
    (``USDT: ... profiler_start``), past Python's ``sys.stderr``: in a sweep's console, a few lines per model
    that say nothing to the user. File descriptor 2 points to /dev/null for the block, then back."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _memory_events(trace: str) -> list[dict]:
    """The ``[memory]`` events of a chrome trace (JSON text). Most of a trace is operators (a GRU's
    training step at length 512: 60,000 operators, 20,000 memory events, 26 MB, 0.8 s to parse whole),
    so only the objects around the name are parsed (0.2 s): each event's opening brace is the last one
    before its name. Should the exporter's layout change so that this finds no events, or anything but
    whole ``[memory]`` events, the whole trace is parsed."""
    decoder, events = json.JSONDecoder(), []
    try:
        for found in re.finditer(r'"name"\s*:\s*"\[memory\]"', trace):
            event, _ = decoder.raw_decode(trace, trace.rindex("{", 0, found.start()))
            if not (isinstance(event, dict) and event.get("name") == "[memory]" and "args" in event):
                raise ValueError(event)
            events.append(event)
        if events:
            return events
    except ValueError:
        pass
    return [event for event in json.loads(trace)["traceEvents"] if event.get("name") == "[memory]"]


@dataclass(frozen=True)
class Growth:
    """Bytes as a function of the sequence length: ``a + b L + c L^2`` (``c`` = 0 unless measured), and
    never less than ``floor`` bytes per token (the fewest measured: a negative ``a`` stays harmless)."""

    a: float
    b: float
    c: float = 0.0
    floor: float = 0.0

    def __call__(self, length: int) -> float:
        return max(self.floor * length, self.a + self.b * length + self.c * length * length)

    @staticmethod
    def fit(lengths: tuple[int, ...], values: list[float]) -> Growth:
        """Through three measurements at lengths l0 < l1 < l2. Quadratic when the bytes per token grow
        by more than a quarter from l1 to l2 (an L^2 term, e.g. explicit (L, L) attention, roughly
        quadruples them from 128 to 512): ``v / L = b + c L`` through the two longer ones. Otherwise the
        line with the steeper of the two slopes, lying on or above every measurement. Long lengths are
        extrapolated from this, so a few percent of curvature (the moment of the peak moving between
        forward and backward) must not become an L^2 term."""
        (l0, l1, l2), (v0, v1, v2) = lengths, values
        floor = min(v / n for n, v in zip(lengths, values, strict=True))
        if v2 / l2 > 1.25 * v1 / l1:
            c = (v2 / l2 - v1 / l1) / (l2 - l1)
            return Growth(0.0, v2 / l2 - c * l2, c, floor)
        b = max((v1 - v0) / (l1 - l0), (v2 - v1) / (l2 - l1), 0.0)
        return Growth(max(v - b * n for n, v in zip(lengths, values, strict=True)), b, 0.0, floor)


@dataclass(frozen=True)
class Footprint:
    """Measured memory of one model, per sample: ``batch * growth(L)`` bytes for each phase. Measured
    at batch 2, so memory that does not grow with the batch (gradients, masks) counts half per sample:
    an overestimate at larger batches, small next to the activations."""

    parameters: int
    train: Growth  # one training step: forward, loss, backward (gradients included)
    eval: Growth  # one inference forward
    maps: Growth | None  # attention_maps (one sample), None for a model without them

    def bytes(self, phase: str, batch: int, length: int) -> float:
        growth = getattr(self, phase)
        return 0.0 if growth is None else batch * growth(length)


def lengths_for(max_len: int | None) -> tuple[int, int, int]:
    """Measured lengths: 32, 128, 512 (far enough apart that an L^2 term shows; the two longer ones are
    multiples of every shipped model's chunk size), scaled down for a model whose ``max_len`` is shorter."""
    top = min(512, max_len or 512)
    return max(1, top // 16), max(2, top // 4), max(3, top)


@contextmanager
def in_the_launcher() -> Iterator[None]:
    """Run model code in the calling process (the launcher, for a sweep) on one torch thread, and put back
    what that code may change there: the thread count, torch's random state and the environment
    variables (which the sweep's workers would inherit)."""
    threads, state, environment = torch.get_num_threads(), torch.get_rng_state(), dict(os.environ)
    try:
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(state)
        os.environ.clear()
        os.environ.update(environment)


def untrained(model_json: str, vocab_size: int) -> LongRangeModule:
    """The shared LightningModule around a model config (JSON), seeded: what the memory and the speed of
    a model are measured on before a sweep."""
    torch.manual_seed(0)
    return LongRangeModule(json.loads(model_json), [f"w{i}" for i in range(vocab_size)])


def answer_batch(size: int, length: int, vocab_size: int, generator: torch.Generator) -> TaskBatch:
    """Random tokens with one answer per sample, at the last position: what the readout and the loss see."""
    tokens = torch.randint(1, vocab_size, (size, length), generator=generator)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, -1] = tokens[:, 0]
    return TaskBatch(tokens, targets, targets.clone())


@lru_cache(maxsize=64)
def _measure(model_json: str, vocab_size: int) -> Footprint:
    module = untrained(model_json, vocab_size)
    generator = torch.Generator().manual_seed(0)
    lengths = lengths_for(module.backbone.max_len)

    def batch(size: int, length: int) -> TaskBatch:
        return answer_batch(size, length, vocab_size, generator)

    def step(data: TaskBatch) -> None:
        logits, targets, _ = module.answer_logits(data)
        F.cross_entropy(logits, targets).backward()
        module.zero_grad(set_to_none=True)

    def forward(data: TaskBatch) -> None:
        with torch.inference_mode():
            module.answer_logits(data)

    attention_maps = getattr(module.backbone, "attention_maps", None)

    def maps(data: TaskBatch) -> None:
        with torch.inference_mode():
            attention_maps(module.embedding(data.tokens))  # type: ignore[misc]

    def fit(run: Callable[[TaskBatch], None], size: int, training: bool) -> Growth:
        module.train(training)
        return Growth.fit(lengths, [peak_bytes(partial(run, batch(size, n))) / size for n in lengths])

    return Footprint(
        module.num_parameters,
        train=fit(step, 2, training=True),
        eval=fit(forward, 2, training=False),
        maps=fit(maps, 1, training=False) if callable(attention_maps) else None,
    )


def measure(model: dict, vocab_size: int) -> Footprint:
    """The memory footprint of a model config (``_target_`` and arguments) on a vocabulary of this size;
    cached per process, measured :func:`in_the_launcher`."""
    with in_the_launcher():
        return _measure(json.dumps(model, sort_keys=True, default=str), vocab_size)
