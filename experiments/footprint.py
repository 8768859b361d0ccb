"""A model's memory, measured rather than modelled: the same code for every model file, present and future.

:func:`measure` runs the actual ``LongRangeModule`` (embedding, backbone, readout, loss) on a batch of
two random sequences at three lengths (32, 128, 512), counting the bytes of live tensor storage with a
``TorchDispatchMode`` (:class:`StorageTracker`): one training step (forward and backward), one inference
forward, and the backbone's ``attention_maps`` where it has them. Each peak per sample is fitted in L
(linear, or quadratic where the measurements are: :meth:`Growth.fit`) and scales with the batch
(:class:`Footprint`). A new model needs nothing here: its file and YAML are measured like the shipped
ones. Results are cached per (model config, vocabulary size), so a sweep measures each model once (under
a second for most, a few seconds for a GRU, whose CPU kernel runs several operators per step).

``resources.estimate`` turns a footprint into a job's peak resident memory.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


class StorageTracker(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the ``with`` block and alive at once.

    Every operator's outputs are recorded by storage; a storage first seen as an input existed before
    (parameters, the batch) and is not counted. Storages are followed with weak references, so those
    freed (or kept by autograd for the backward pass) count exactly as long as they live. Checking every
    live storage after every operator would be quadratic: the newest 16 are checked after every operator
    (temporaries die young, and backward frees what forward saved in reverse order), all of them every
    ``len(live) / 32`` operators. A storage freed out of that order may count a few operators too long:
    an overestimate, never an underestimate."""

    NEWEST = 16

    def __init__(self) -> None:
        super().__init__()
        self.peak = self.current = self._ops = 0
        self._before: dict[int, Any] = {}  # address -> weak ref: storages that existed before the block
        self._live: dict[int, tuple[Any, int]] = {}  # address -> (weak ref, bytes): allocated inside it

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self._ops += 1  # first what was freed since the last operator, then this one's outputs
        if self._ops % max(1, len(self._live) // 32) == 0:
            self._drop_dead(list(self._live))
        else:  # the newest: temporaries, and what backward frees (in reverse order of the forward)
            self._drop_dead(list(itertools.islice(reversed(self._live), self.NEWEST)))
        for tensor in _tensors((args, kwargs)):
            storage = tensor.untyped_storage()
            if not self._known(storage._cdata):
                self._before[storage._cdata] = storage._weak_ref()
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            storage = tensor.untyped_storage()
            if not self._known(storage._cdata):
                self._live[storage._cdata] = (storage._weak_ref(), storage.nbytes())
                self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    def _known(self, key: int) -> bool:
        """Whether the storage at this address is one already seen. Addresses are reused once a storage
        is freed, so a dead entry at the address is dropped first (the new storage is another one)."""
        self._drop_dead([key])
        before = self._before.get(key)
        if before is not None and _expired(before):
            _free_weak_ref(self._before.pop(key))
            before = None
        return before is not None or key in self._live

    def _drop_dead(self, keys: list[int]) -> None:
        for key in keys:
            found = self._live.get(key)
            if found is not None and _expired(found[0]):
                self.current -= found[1]
                _free_weak_ref(self._live.pop(key)[0])

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for ref in [*self._before.values(), *(ref for ref, _ in self._live.values())]:
            _free_weak_ref(ref)
        self._before, self._live = {}, {}


_expired, _free_weak_ref = torch.UntypedStorage._expired, torch.UntypedStorage._free_weak_ref


def _tensors(found: Any) -> list[torch.Tensor]:
    """The tensors in an operator's arguments or outputs (nested tuples, lists and dicts)."""
    if isinstance(found, torch.Tensor):
        return [found]
    if isinstance(found, tuple | list):
        return [t for item in found for t in _tensors(item)]
    if isinstance(found, dict):
        return [t for item in found.values() for t in _tensors(item)]
    return []


def peak_bytes(run: Callable[[], Any]) -> int:
    with StorageTracker() as tracker:
        run()
    return tracker.peak


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


@lru_cache(maxsize=64)
def _measure(model_json: str, vocab_size: int) -> Footprint:
    from longrange.datasets.base import IGNORE, TaskBatch
    from longrange.models.module import LongRangeModule

    torch.manual_seed(0)
    module = LongRangeModule(json.loads(model_json), [f"w{i}" for i in range(vocab_size)])
    generator = torch.Generator().manual_seed(0)
    lengths = lengths_for(module.backbone.max_len)

    def batch(size: int, length: int) -> TaskBatch:
        tokens = torch.randint(1, vocab_size, (size, length), generator=generator)
        targets = torch.full_like(tokens, IGNORE)
        targets[:, -1] = tokens[:, 0]  # one answer per sample: what the readout and the loss see
        return TaskBatch(tokens, targets, targets.clone())

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
    cached per process. It runs the model's own code in the calling process (the launcher, for a sweep),
    on one torch thread, and puts back what that code may change there: the thread count, torch's random
    state and the environment variables (which the sweep's workers would inherit)."""
    threads, state, environment = torch.get_num_threads(), torch.get_rng_state(), dict(os.environ)
    try:
        torch.set_num_threads(1)
        return _measure(json.dumps(model, sort_keys=True, default=str), vocab_size)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(state)
        os.environ.clear()
        os.environ.update(environment)
