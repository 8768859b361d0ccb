"""FLOPs of a training step (torch's ``FlopCounterMode``, with the kernels it misses or miscounts on the CPU)
and this core's single-thread GEMM peak, the yardstick for "fraction of peak".

``FlopCounterMode`` counts the matrix products (mm, addmm, bmm, baddbmm, convolutions, attention), two
FLOPs per multiply-add; elementwise work (activations, norms, exp) is not counted, as is usual. On the
CPU it needs four corrections, supplied here as ``custom_mapping``:

* ``convolution_backward`` ignores ``groups``: a depthwise convolution's backward is counted as if it mixed
  every channel with every other (at width 64, L = 1024, 38.9 GFLOP for what is 0.4 GFLOP of work).
* ``_scaled_dot_product_flash_attention_for_cpu`` (forward and backward) is not counted at all. Counted
  here as the useful products: QKᵀ and PV, 4 L² d per head forward, halved when causal (the kernel skips
  the blocks above the diagonal); the backward 2.5x the forward (QKᵀ recomputed, then dV, dP, dQ, dK).
* ``linalg_solve_triangular`` (DeltaNet's UT transform) is not counted: n² m per (n x n) system with m
  right-hand sides.
* ``mkldnn_rnn_layer`` (the LSTM's oneDNN kernel) is not counted: 2 (in + H) 4H per position forward,
  twice that backward (gradients of the inputs and of the weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten
Shape = Sequence[int]


def _depthwise_aware_conv_backward(
    grad_out_shape: Shape, x_shape: Shape, w_shape: Shape, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    """Backward of a convolution, ``groups`` honoured: each requested gradient costs one forward's FLOPs."""
    output_mask = args[-1]  # convolution_backward's last argument: which of (input, weight, bias) to compute
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])  # (B, C_out, *L) x (C_in / groups, *K)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _attention_forward_flops(q_shape: Shape, k_shape: Shape, causal: bool) -> int:
    *batch, L_q, d = q_shape
    full = 4 * math.prod(batch) * L_q * k_shape[-2] * d  # QKᵀ and PV
    return full // 2 if causal else full


def _cpu_flash(
    q: Shape, k: Shape, v: Shape, dropout: float = 0.0, is_causal: bool = False, *a: Any, **kw: Any
) -> int:
    return _attention_forward_flops(q, k, bool(kw.get("is_causal", is_causal)))


def _cpu_flash_backward(grad_out: Shape, q: Shape, k: Shape, v: Shape, *args: Any, **kw: Any) -> int:
    causal = bool(
        kw.get("is_causal", args[3] if len(args) > 3 else False)
    )  # (out, logsumexp, dropout_p, is_causal)
    return 5 * _attention_forward_flops(q, k, causal) // 2


def _solve_triangular(a_shape: Shape, b_shape: Shape, *args: Any, **kw: Any) -> int:
    *batch, n, m = b_shape
    return math.prod(batch) * n * n * m


def _rnn_layer_flops(input_shape: Shape, w_ih: Shape, w_hh: Shape) -> int:
    positions = math.prod(input_shape[:-1])
    return 2 * positions * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn(input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, **kw: Any) -> int:
    return _rnn_layer_flops(input_shape, w_ih, w_hh)


def _mkldnn_rnn_backward(input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, **kw: Any) -> int:
    return 2 * _rnn_layer_flops(input_shape, w_ih, w_hh)


CORRECTIONS: dict[Any, Callable[..., int]] = {
    aten.convolution_backward: _depthwise_aware_conv_backward,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
    aten.linalg_solve_triangular: _solve_triangular,
    aten.mkldnn_rnn_layer: _mkldnn_rnn,
    aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward,
}


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (matrix products, with the corrections above)."""
    with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as counter:
        step()
    return int(counter.get_total_flops())


def gemm_peak(size: int = 2048, repeats: int = 3) -> float:
    """This core's single-thread fp32 GEMM rate (FLOP/s of CPU time): best of ``repeats`` products of two
    (size x size) matrices, on whatever number of threads the caller set (the benchmarks: one)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * size**3 / best
