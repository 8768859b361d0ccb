"""The two forms of every backbone (``forward``: parallel or chunked; ``step``: one position at a time) are
one causal function, with its gradients, checked where bugs hide: perturbed weights (every gate
input-dependent), at least three chunks, lengths that are not a multiple of the chunk size, float64. Every
file in conf/model/ is tested (``model_name``); plus a gradient check of every custom autograd.Function in
models/.

Why perturbed weights: at their initial weights some models are blind to whole classes of bugs (mLSTM's gate
weights start at zero, so its gates are constant over positions and a gate read from the wrong position, or a
missing forget factor, changes nothing the tests could see).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from test_models import run_steps

import longrange.models
from longrange.models import Backbone, mlstm
from longrange.models.layers import _CausalDepthwise, _RMSNorm
from longrange.models.mamba import ChunkedScan, ssd_scan
from longrange.models.module import build_backbone

# Chunked forms run with chunks of 8 (blocks of 6 for window attention): at LENGTH = 29 that is four chunks
# (five blocks), the last one partial, so state crosses at least two chunk borders and padding is exercised.
SMALL_CHUNKS = {"chunk_size": 8, "window": 6}
LENGTH = 29
NOISE = 0.5  # perturbation scale, see perturb()
# The two forms agree to ~1e-14 in float64 (outputs and gradients, every model); a bug moves them by ~1e-2.
TOLERANCE = {"rtol": 1e-10, "atol": 1e-11}


def chunk_of(config: dict) -> int:
    """The length of the model's chunks (or attention blocks); 8 for models without any (no borders)."""
    return config.get("chunk_size", config.get("window", 8))


@torch.no_grad()
def perturb(backbone: torch.nn.Module, seed: int = 0) -> None:
    """Add Gaussian noise to every parameter: std NOISE / sqrt(fan_in) for matrices and conv kernels (fan_in:
    the entries one output reads, so each pre-activation moves by about NOISE times its inputs' scale,
    whatever the width) and std NOISE for vectors (biases, norm scales, mLSTM's skip, Mamba's A_log, dt_bias
    and D). Zero-initialised weights become non-zero: mLSTM's gate pre-activations then vary by ~0.7 from one
    position to the next, so every gate is input-dependent. The scale keeps float64 well conditioned: the
    recurrent matrices stay contractive (the RNN's spectral radius ~0.8), no exponent (mLSTM's input gate,
    Mamba's decays) grows beyond a few units, and the two forms agree to ~1e-14."""
    generator = torch.Generator().manual_seed(seed)
    for p in backbone.parameters():
        fan_in = p[0].numel() if p.dim() >= 2 else 1
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
        p.add_(noise * (NOISE / math.sqrt(fan_in)))
        assert (p != 0).all()


def perturbed_backbone(compose: Callable[..., DictConfig], name: str, small: bool) -> tuple[Backbone, int]:
    """The backbone of conf/model/<name>.yaml in float64, eval mode, perturbed; ``small``: with the chunk or
    window sizes of SMALL_CHUNKS (where the model has that key). Returns it and its chunk length."""
    config = OmegaConf.to_container(compose([f"model={name}"]).model, resolve=True)
    assert isinstance(config, dict)
    if small:
        config |= {key: value for key, value in SMALL_CHUNKS.items() if key in config}
    torch.manual_seed(0)
    backbone = build_backbone(config)
    backbone = backbone.double().eval()  # type: ignore[attr-defined]
    perturb(backbone)  # type: ignore[arg-type]
    return backbone, chunk_of(config)


@pytest.fixture
def perturbed(compose: Callable[..., DictConfig], model_name: str) -> tuple[Backbone, int]:
    return perturbed_backbone(compose, model_name, small=True)


def random_input(backbone: Backbone, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, length, backbone.d_input, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("length", [1, LENGTH])
def test_forms_agree_with_small_chunks(perturbed: tuple[Backbone, int], length: int) -> None:
    """One position (a single unpadded chunk) and four chunks, the last partial."""
    backbone, _ = perturbed
    x = random_input(backbone, length)
    with torch.no_grad():
        stepped, _ = run_steps(backbone, x)
        torch.testing.assert_close(stepped, backbone(x), **TOLERANCE)


def test_forms_agree_with_shipped_chunks(compose: Callable[..., DictConfig], model_name: str) -> None:
    """The YAML's own chunk size (or window): three whole chunks and a partial fourth."""
    backbone, chunk = perturbed_backbone(compose, model_name, small=False)
    x = random_input(backbone, 3 * chunk + 5)
    with torch.no_grad():
        stepped, _ = run_steps(backbone, x)
        torch.testing.assert_close(stepped, backbone(x), **TOLERANCE)


def test_outputs_up_to_t_do_not_depend_on_later_inputs(perturbed: tuple[Backbone, int]) -> None:
    """Value-based causality of ``forward``: replace the inputs after t by new random ones; the outputs at
    positions <= t are bitwise the same (the future enters only through exact zeros: masked weights, a
    causal cumulative sum), every output after t changes. t: the first position, both sides of a chunk
    border, inside a later chunk, and the last chunk."""
    backbone, chunk = perturbed
    x = random_input(backbone, LENGTH)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        y = backbone(x)
        for t in (0, chunk - 1, chunk, 2 * chunk + chunk // 2, LENGTH - 2):
            changed = x.clone()
            changed[:, t + 1 :] = torch.randn(changed[:, t + 1 :].shape, generator=generator, dtype=x.dtype)
            y_changed = backbone(changed)
            assert torch.equal(y_changed[:, : t + 1], y[:, : t + 1]), f"position <= {t} sees the future"
            assert (y_changed[:, t + 1 :] != y[:, t + 1 :]).any(-1).all(), (
                f"an output after {t} ignores its input"
            )


def test_gradients_of_the_two_forms_agree(
    perturbed: tuple[Backbone, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradients of a random readout of ``forward(x)`` and of the stepped outputs, w.r.t. the input and every
    parameter. mLSTM: with its eps set to 0. The eps term is the one place where its stabiliser m shows;
    the chunked form treats m as a constant for the gradient by design (models/mlstm.py), the step form does
    not, so with eps > 0 the gradients differ by up to ~4e-9 relative here; with eps = 0 the function does
    not depend on m at all and the two agree to ~1e-14 like every other model's."""
    monkeypatch.setattr(mlstm, "EPS", 0.0)
    backbone, _ = perturbed
    x = random_input(backbone, LENGTH).requires_grad_()
    readout = torch.randn(2, LENGTH, backbone.d_output, generator=torch.Generator().manual_seed(3)).double()
    named = dict(backbone.named_parameters())  # type: ignore[attr-defined]
    inputs = [x, *named.values()]
    forward = torch.autograd.grad((backbone(x) * readout).sum(), inputs, allow_unused=True)
    stepped = torch.autograd.grad((run_steps(backbone, x)[0] * readout).sum(), inputs, allow_unused=True)
    for name, a, b in zip(["input", *named], forward, stepped, strict=True):
        assert a is not None and b is not None, f"no gradient for {name}"
        torch.testing.assert_close(a, b, **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


# --- custom autograd.Functions -------------------------------------------------------------------------
def custom_functions() -> set[type]:
    """Every torch.autograd.Function subclass defined in models/."""
    found = set()
    for info in pkgutil.iter_modules(longrange.models.__path__):
        module = importlib.import_module(f"longrange.models.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, torch.autograd.Function) and cls.__module__ == module.__name__:
                found.add(cls)
    return found


def test_every_custom_autograd_function_has_a_gradient_check() -> None:
    """A new hand-written backward in models/ must be added to the gradient checks below."""
    assert custom_functions() == {ChunkedScan, _CausalDepthwise, _RMSNorm}


@pytest.mark.parametrize("chunks", [1, 3])
def test_chunked_scan_backward_passes_gradcheck(chunks: int) -> None:
    """Mamba's hand-written backward against finite differences, in float64, with decays as in the model
    (cum: cumulative sums of negative log decays within each chunk)."""
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    b, Q, H, P, N = 2, 4, 2, 3, 5
    xdt, B, C = rand(b, chunks, Q, H, P), rand(b, chunks, Q, N), rand(b, chunks, Q, N)
    cum = -(rand(b, chunks, Q, H).abs() * 0.5).cumsum(2)
    inputs = tuple(t.requires_grad_() for t in (xdt, cum, B, C))
    assert torch.autograd.gradcheck(ChunkedScan.apply, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_ssd_scan_gradients_through_padding_pass_gradcheck() -> None:
    """The whole scan (chunking, zero padding to whole chunks, the custom backward): L = 10 in chunks of 4."""
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    b, L, H, P, N = 2, 10, 2, 3, 4
    x, B, C = rand(b, L, H, P), rand(b, L, N), rand(b, L, N)
    dt = torch.nn.functional.softplus(rand(b, L, H))
    A = -rand(H).abs() - 0.5
    inputs = tuple(t.requires_grad_() for t in (x, dt, A, B, C))
    assert torch.autograd.gradcheck(lambda *a: ssd_scan(*a, chunk=4), inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("length", [1, 3, 9])
def test_causal_depthwise_backward_passes_gradcheck(length: int) -> None:
    """The short convolution's hand-written backward (models/layers.py), kernel 4: sequences shorter than
    the kernel, as long, and longer; input in channels-first memory as DeltaNet gives it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, length, generator=generator, dtype=torch.float64).transpose(1, 2)  # (B, L, C)
    weight, bias = (torch.randn(*s, generator=generator, dtype=torch.float64) for s in ((5, 4), (5,)))
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(_CausalDepthwise.apply, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("gated", [False, True])
def test_rms_norm_backward_passes_gradcheck(gated: bool) -> None:
    """The RMSNorm's hand-written backward (models/layers.py), plain (DeltaNet) and gated (Mamba-2)."""
    generator = torch.Generator().manual_seed(0)
    x, gate = (torch.randn(2, 3, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(6, generator=generator, dtype=torch.float64)
    inputs = (x.requires_grad_(), gate.requires_grad_() if gated else None, weight.requires_grad_(), 1e-5)
    assert torch.autograd.gradcheck(_RMSNorm.apply, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
