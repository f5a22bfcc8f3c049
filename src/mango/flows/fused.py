"""Fused attention with its row log-sum-exp, for the ICA forward pass without an L x L matrix.

ICA needs ``P X2`` and ``diag(P)`` of ``P = softmax(S)`` masked to ``j >= i``. A fused flash
kernel returns ``P X2`` and the row log-sum-exp ``lse``; then ``log P_ii = S_ii - lse_i`` with
``S_ii = q_i · k_i / τ`` computed directly, so nothing quadratic is stored.

PyTorch's CPU kernel ``aten._scaled_dot_product_flash_attention_for_cpu`` returns ``lse``, but
autograd drops the gradient that flows through it. :class:`_AttentionWithLSE` writes the backward
itself: with ``g_i = ∂L/∂lse_i`` and ``∂lse_i/∂S_ij = P_ij``, the score gradient becomes
``P_ij (dP_ij - (D_i - g_i))`` where ``D_i = Σ_d dO_id O_id``. The kernel's own backward computes
``D`` from ``(grad_out, out)``, so appending one channel (value 0, out ``-g_i``, grad_out 1) makes
it compute exactly that. Tests compare every gradient with the dense implementation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(
    torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None
)


def fused_available(x: Tensor) -> bool:
    """Whether the fused kernel can run on ``x`` (CPU, float32/float64, kernel present)."""
    return (
        _FLASH is not None
        and _FLASH_BACKWARD is not None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )


def _pad_last(t: Tensor, size: int, value: float = 0.0) -> Tensor:
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]), value=value)


class _AttentionWithLSE(torch.autograd.Function):
    """Causal (``j <= i``) attention on (B, 1, L, E) inputs -> (output, lse) with exact gradients."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        size = max(q.shape[-1], v.shape[-1])
        qp, kp, vp = (_pad_last(t, size).contiguous() for t in (q, k, v))
        out, lse = _FLASH(qp, kp, vp, 0.0, True, scale=scale)
        out = out[..., : v.shape[-1]]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out, lse

    @staticmethod
    def backward(
        ctx: Any, grad_out: Tensor | None, grad_lse: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        if grad_lse is None:
            grad_lse = torch.zeros_like(lse)
        dv = v.shape[-1]
        size = max(q.shape[-1], dv + 1)
        extra = torch.zeros_like(out[..., :1])
        v_aug = _pad_last(torch.cat([v, extra], -1), size)
        out_aug = _pad_last(torch.cat([out, -grad_lse.reshape_as(extra)], -1), size)
        grad_aug = _pad_last(torch.cat([grad_out, torch.ones_like(extra)], -1), size)
        gq, gk, gv = _FLASH_BACKWARD(
            grad_aug.contiguous(),
            _pad_last(q, size).contiguous(),
            _pad_last(k, size).contiguous(),
            v_aug.contiguous(),
            out_aug.contiguous(),
            lse,
            0.0,
            True,
            scale=ctx.scale,
        )
        return gq[..., : q.shape[-1]], gk[..., : k.shape[-1]], gv[..., :dv], None


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(P v, lse)`` for ``P = softmax(q kᵀ)`` masked to ``j <= i``; inputs (B, L, E).

    ICA's mask ``j >= i`` is this mask on reversed token order: callers pass reversed tokens.
    A learned temperature belongs in ``q`` (the kernel's own scale is 1, not differentiable).
    """
    out, lse = _AttentionWithLSE.apply(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), 1.0)
    return out.squeeze(1), lse.squeeze(1)
