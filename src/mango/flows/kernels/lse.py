"""The lse attention kernel: ``c0 X2 + c1 P X2`` and ``log diag A`` without an L x L matrix.

The ``c0 I + c1 P`` forms of ICA (:class:`~mango.flows.softmax_attention.SoftmaxCrossAttention`)
need ``P X2`` and ``diag(P)`` of ``P = softmax(S)`` masked to ``j >= i``. A fused kernel returns
``P X2`` and the row log-sum-exp ``lse``; then ``log P_ii = S_ii - lse_i`` with
``S_ii = q_i · k_i / τ`` computed directly, so nothing quadratic is stored.

Two PyTorch kernels return ``lse`` (:data:`KERNELS`; :func:`select_kernel` picks one by device
and dtype, and the dense path runs where none fits):

- on the CPU (float32, float64) ``aten._scaled_dot_product_flash_attention_for_cpu``;
- on CUDA (float32) ``aten._scaled_dot_product_efficient_attention``, the memory-efficient
  kernel (3xTF32 on sm80+). Its ``lse`` has ``ceil(L/32)·32`` columns: the first ``L`` are
  used, the whole tensor goes back to its backward. The flash and cuDNN kernels take fp16/bf16
  only, never the flow's float32 math; float64 has no fused CUDA kernel.

Autograd drops the gradient that flows through ``lse``. :class:`_AttentionWithLSE` writes the
backward itself, for either kernel: with ``g_i = ∂L/∂lse_i`` and ``∂lse_i/∂S_ij = P_ij``, the
score gradient becomes ``P_ij (dP_ij - (D_i - g_i))`` where ``D_i = Σ_d dO_id O_id``. Both
kernels' backwards compute ``D`` from the ``(grad_out, out)`` they are given, so appending one
channel (value 0, out ``-g_i``, grad_out 1) makes them compute exactly that. Tests compare every
gradient with the dense implementation (``tests/flows``; on CUDA ``tests/gpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``forward(q, k, v, scale) -> (out, lse, state)`` of a kernel on (B, 1, L, E) inputs; ``lse``
#: as the kernel returns it (possibly padded), ``state`` what its backward needs besides.
KernelForward = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor, tuple[Tensor, ...]]]
#: ``backward(grad_out, q, k, v, out, lse, state, scale) -> (grad_q, grad_k, grad_v)``.
KernelBackward = Callable[..., tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class FusedKernel:
    """A causal attention kernel that returns the row log-sum-exp, and its backward.

    ``ops`` are the ``torch.ops.aten`` names it calls; ``alignment`` the multiple its head
    dimensions are zero-padded to (zeros change neither scores nor the used output channels);
    ``enabled`` a switch PyTorch offers to turn the kernel off (the dense path then runs).
    """

    name: str
    device_type: str
    dtypes: tuple[torch.dtype, ...]
    ops: tuple[str, ...]
    alignment: int
    forward: KernelForward
    backward: KernelBackward
    enabled: Callable[[], bool] = lambda: True

    def available(self) -> bool:
        """Whether this PyTorch build has the kernel's operators and it is switched on."""
        return all(hasattr(torch.ops.aten, op) for op in self.ops) and self.enabled()


def _cpu_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor, tuple]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, True, scale=scale
    )
    return out, lse, ()


def _cpu_backward(*args: Any) -> tuple[Tensor, Tensor, Tensor]:
    grad, q, k, v, out, lse, _, scale = args
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, True, scale=scale
    )


def _cuda_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor, tuple]:
    # (query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, *, scale)
    out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, True, scale=scale
    )
    return out, lse, (seed, offset)


def _cuda_backward(*args: Any) -> tuple[Tensor, Tensor, Tensor]:
    grad, q, k, v, out, lse, state, scale = args
    # (grad_out, query, key, value, attn_bias, out, logsumexp, philox_seed, philox_offset,
    #  dropout_p, grad_input_mask, is_causal, *, scale) -> (dq, dk, dv, d_bias)
    seed, offset = state
    gq, gk, gv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        grad, q, k, v, None, out, lse, seed, offset, 0.0, [True, True, True, False], True,
        scale=scale,
    )  # fmt: skip
    return gq, gk, gv


CPU_FLASH = FusedKernel(
    "cpu-flash",
    "cpu",
    (torch.float32, torch.float64),
    (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention_for_cpu_backward",
    ),
    1,
    _cpu_forward,
    _cpu_backward,
)
CUDA_EFFICIENT = FusedKernel(
    "cuda-efficient",
    "cuda",
    (torch.float32,),
    (
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_efficient_attention_backward",
    ),
    4,  # 16-byte rows of float32: the kernel's aligned variant
    _cuda_forward,
    _cuda_backward,
    enabled=torch.backends.cuda.mem_efficient_sdp_enabled,
)
#: The fused kernels, in the order :func:`select_kernel` tries them.
KERNELS = (CPU_FLASH, CUDA_EFFICIENT)


def select_kernel(
    device_type: str, dtype: torch.dtype, kernels: tuple[FusedKernel, ...] | None = None
) -> FusedKernel | None:
    """The fused kernel (of ``kernels``, default :data:`KERNELS`) for tensors of ``device_type``
    and ``dtype``; ``None`` where none fits or is available: the dense path runs."""
    for kernel in KERNELS if kernels is None else kernels:
        if kernel.device_type == device_type and dtype in kernel.dtypes and kernel.available():
            return kernel
    return None


def fused_available(x: Tensor) -> bool:
    """Whether a fused kernel runs on tensors like ``x`` (see :func:`select_kernel`)."""
    return select_kernel(x.device.type, x.dtype) is not None


def _pad_last(t: Tensor, size: int, value: float = 0.0) -> Tensor:
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]), value=value)


def _padded(*sizes: int, alignment: int) -> int:
    return -(-max(sizes) // alignment) * alignment


class _AttentionWithLSE(torch.autograd.Function):
    """Causal (``j <= i``) attention on (B, 1, L, E) inputs -> (output, lse) with exact gradients."""

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float, kernel: FusedKernel
    ) -> tuple[Tensor, Tensor]:
        size = _padded(q.shape[-1], v.shape[-1], alignment=kernel.alignment)
        qp, kp, vp = (_pad_last(t, size).contiguous() for t in (q, k, v))
        out, lse_kernel, state = kernel.forward(qp, kp, vp, scale)
        out = out[..., : v.shape[-1]]
        ctx.save_for_backward(q, k, v, out, lse_kernel, *state)
        ctx.scale, ctx.kernel = scale, kernel
        return out, lse_kernel[..., : q.shape[-2]]

    @staticmethod
    def backward(
        ctx: Any, grad_out: Tensor | None, grad_lse: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse_kernel, *state = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dv = v.shape[-1]
        extra = torch.zeros_like(out[..., :1])
        lse_channel = extra if grad_lse is None else -grad_lse.reshape_as(extra).to(out.dtype)
        size = _padded(q.shape[-1], dv + 1, alignment=ctx.kernel.alignment)
        v_aug = _pad_last(torch.cat([v, extra], -1), size)
        out_aug = _pad_last(torch.cat([out, lse_channel], -1), size)
        grad_aug = _pad_last(torch.cat([grad_out, torch.ones_like(extra)], -1), size)
        gq, gk, gv = ctx.kernel.backward(
            grad_aug.contiguous(),
            _pad_last(q, size).contiguous(),
            _pad_last(k, size).contiguous(),
            v_aug.contiguous(),
            out_aug.contiguous(),
            lse_kernel,
            tuple(state),
            ctx.scale,
        )
        return gq[..., : q.shape[-1]], gk[..., : k.shape[-1]], gv[..., :dv], None, None


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(P v, lse)`` for ``P = softmax(q kᵀ)`` masked to ``j <= i``; inputs (B, L, E).

    ICA's mask ``j >= i`` is this mask on reversed token order: callers pass reversed tokens.
    A learned temperature belongs in ``q`` (the kernel's own scale is 1, not differentiable).
    Callers check :func:`fused_available` first.
    """
    kernel = select_kernel(q.device.type, q.dtype)
    if kernel is None:
        raise ValueError(f"no fused attention kernel for {q.dtype} on {q.device.type}")
    out, lse = _AttentionWithLSE.apply(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), 1.0, kernel)
    return out.squeeze(1), lse.squeeze(1)


def coefficient_attention(
    q: Tensor, k: Tensor, x2: Tensor, log_c0: Tensor, log_c1: Tensor, gated: bool
) -> tuple[Tensor, Tensor]:
    """``(A X2, log diag A)`` for ``A = c0 I + c1 P`` without forming ``A``; inputs (B, L2, ·).

    ``q`` is already divided by ``τ``; all tokens arrive in **reversed** order, where the mask
    ``j >= i`` is the kernel's causal mask (reversing commutes with the interpolation of ``X1``).
    ``log P_ii = q_i · k_i - lse_i``; the gated form (``c0 = 1 - c1``) is one ``lerp``.
    """
    attended, lse = causal_attention(q, k, x2)
    log_p_diag = torch.linalg.vecdot(q, k) - lse
    if gated:  # (1 - α) X2 + α P X2 in one op
        y2 = torch.lerp(x2, attended, log_c1.exp())
    else:
        y2 = log_c0.exp() * x2 + log_c1.exp() * attended
    return y2, torch.logaddexp(log_c0, log_c1 + log_p_diag)
