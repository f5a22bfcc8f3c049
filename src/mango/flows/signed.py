"""The signed ICA form's kernels: one hand-differentiated dense pass for short token sequences.

The signed form (:class:`~mango.flows.attention.InvertibleCrossAttention`, ``attention="signed"``)
maps ``X2`` to ``X2 + Δ`` with

.. math::

    q = \\mathrm{LN}_q(H W_q), \\quad k = \\mathrm{LN}_k(H W_k), \\quad
    S = q k^{\\top} / τ, \\quad P^{\\pm} = \\mathrm{softmax}(\\pm S \\text{ masked to } j > i),

    N = \\tfrac12 (P^{+} - P^{-}), \\qquad Δ = β N X_2,

with ``τ = √d_k (1 + softplus(t))`` and ``β = β_{max} \\tanh(b)``. The last row of ``N`` has no
``j > i`` and is zero; here its mask keeps the diagonal, so both softmaxes are one-hot in that row
and their difference is an exact zero (with a zero gradient), and ``±S`` share one softmax call.

For short sequences the time of this map is almost all per-operation overhead, so
:class:`_SignedDelta` runs it as one autograd node: a forward of about fifteen kernels that keeps
``P^{\\pm}`` (``2 · B · L2²`` numbers), and a backward written by hand. With ``G = dΔ X_2^{\\top} β``
and ``r^{\\pm}`` the row sums of ``G ∘ P^{\\pm}``,

.. math::

    \\frac{\\partial \\ell}{\\partial X_2} = β N^{\\top} dΔ, \\qquad
    \\frac{\\partial \\ell}{\\partial S} = \\tfrac12 \\big(P^{+} ∘ (G - r^{+})
        + P^{-} ∘ (G - r^{-})\\big),

then the usual products for ``q``, ``k``, ``τ`` and the two LayerNorms. Longer sequences use the
flash kernel, which never forms ``P^{\\pm}`` (:mod:`mango.flows.fused`).

Example:
    >>> h, x2 = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    >>> params = [torch.randn(6, 4), torch.randn(6, 4), torch.ones(6), torch.zeros(6), torch.ones(6)]
    >>> params = [p.double().requires_grad_() for p in params]
    >>> t, b = torch.tensor(-4.0, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    >>> inputs = (h.requires_grad_(), x2.requires_grad_(), *params, t.requires_grad_(), b.requires_grad_())
    >>> mask = signed_mask(5)
    >>> torch.autograd.gradcheck(lambda *a: signed_delta(*a, mask, 0.5, 1e-5), inputs)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: Longest ``X2`` (tokens) run by the dense one-node pass; longer ones use the flash kernel.
#: Measured on a 2-core CPU (docs/performance.md): the dense pass is faster up to about here.
DENSE_MAX_TOKENS = 128


def signed_mask(l2: int, device: torch.device | None = None) -> Tensor:
    """``True`` where ``P^±`` is masked: ``j <= i``, except the last row's diagonal (see above)."""
    mask = torch.tril(torch.ones(l2, l2, dtype=torch.bool, device=device))
    mask[-1, -1] = False
    return mask


def signed_temperature(offset: Tensor, key_dim: int) -> Tensor:
    """``τ = √d_k (1 + softplus(t))``: never below ``√d_k``."""
    return math.sqrt(key_dim) * (1 + F.softplus(offset))


def signed_strength(strength: Tensor, bound: float) -> Tensor:
    """``β = β_max tanh(b)``."""
    return bound * torch.tanh(strength)


def signed_probabilities(q: Tensor, k: Tensor, inv_tau: Tensor, mask: Tensor) -> Tensor:
    """``(P+, P-)`` stacked, (2, B, L2, L2), from queries and keys (B, L2, E)."""
    s = torch.bmm(q, k.mT)
    logits = torch.stack([s, -s]) * inv_tau
    return torch.softmax(logits.masked_fill(mask, -math.inf), dim=-1)


class _SignedDelta(torch.autograd.Function):
    """``Δ = β N X2`` from ``H``, ``X2`` and the layer's parameters, with a hand-written backward."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        x2: Tensor,
        w_q: Tensor,
        w_k: Tensor,
        gamma_q: Tensor,
        beta_q: Tensor,
        gamma_k: Tensor,
        offset: Tensor,
        strength: Tensor,
        mask: Tensor,
        bound: float,
        eps: float,
    ) -> Tensor:
        batch, l2, _ = h.shape
        e = w_q.shape[0]
        inv_tau = 1 / signed_temperature(offset, e)
        tanh_b = torch.tanh(strength)
        beta = bound * tanh_b
        u = F.linear(h, torch.cat([w_q, w_k])).view(batch, l2, 2, e)
        normed, _, rstd = torch.native_layer_norm(u, (e,), None, None, eps)
        q = torch.addcmul(beta_q, normed[:, :, 0], gamma_q)
        k = normed[:, :, 1] * gamma_k
        p = signed_probabilities(q, k, inv_tau, mask)
        n = (p[0] - p[1]).mul_(0.5)
        m = torch.bmm(n, x2)
        ctx.save_for_backward(
            h,
            x2,
            w_q,
            w_k,
            gamma_q,
            gamma_k,
            normed,
            rstd,
            q,
            k,
            p,
            n,
            m,
            inv_tau,
            beta,
            offset,
            tanh_b,
        )
        ctx.bound = bound
        return m * beta

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, x2, w_q, w_k, gamma_q, gamma_k, normed, rstd, q, k, p, n, m = ctx.saved_tensors[:13]
        inv_tau, beta, offset, tanh_b = ctx.saved_tensors[13:]
        e = w_q.shape[0]
        grad_m = grad * beta
        grad_strength = (grad * m).sum() * ctx.bound * (1 - tanh_b.square())
        grad_x2 = torch.bmm(n.mT, grad_m)
        g = torch.bmm(grad_m, x2.mT)  # ∂ℓ/∂N
        gp = p * g
        d = gp - p * gp.sum(-1, keepdim=True)
        # grad_s = ∂ℓ/∂S for S = q kᵀ τ⁻¹, so ∂ℓ/∂q = τ⁻¹ grad_s k, ∂ℓ/∂k = τ⁻¹ grad_sᵀ q and
        # ∂ℓ/∂τ⁻¹ = Σ q ∘ (grad_s k)
        grad_s = (d[0] + d[1]) * 0.5
        a = torch.bmm(grad_s, k)
        grad_inv_tau = (a * q).sum()
        grad_q = a * inv_tau
        grad_k = torch.bmm(grad_s.mT, q) * inv_tau
        # τ = √e (1 + softplus(t)): ∂τ⁻¹/∂t = -τ⁻² √e sigmoid(t)
        grad_offset = -grad_inv_tau * inv_tau.square() * math.sqrt(e) * torch.sigmoid(offset)
        n_q, n_k = normed[:, :, 0], normed[:, :, 1]
        grad_gamma_q = (grad_q * n_q).sum((0, 1))
        grad_beta_q = grad_q.sum((0, 1))
        grad_gamma_k = (grad_k * n_k).sum((0, 1))
        gn = torch.stack([grad_q * gamma_q, grad_k * gamma_k], 2)
        grad_u = rstd * (
            gn - gn.mean(-1, keepdim=True) - normed * (gn * normed).mean(-1, keepdim=True)
        )
        grad_u = grad_u.reshape(*h.shape[:2], 2 * e)  # reshape, not flatten: vmap (jacobian)
        w = torch.cat([w_q, w_k])
        grad_w = grad_u.reshape(-1, 2 * e).mT @ h.reshape(-1, h.shape[2])
        grad_h = grad_u @ w
        return (
            grad_h,
            grad_x2,
            grad_w[:e],
            grad_w[e:],
            grad_gamma_q,
            grad_beta_q,
            grad_gamma_k,
            grad_offset,
            grad_strength,
            None,
            None,
            None,
        )


def signed_delta(
    h: Tensor,
    x2: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    gamma_q: Tensor,
    beta_q: Tensor,
    gamma_k: Tensor,
    offset: Tensor,
    strength: Tensor,
    mask: Tensor,
    bound: float,
    eps: float,
) -> Tensor:
    """``Δ = β N X2`` (B, L2, D) as one autograd node (see the module docstring).

    ``h`` (B, L2, D) is the conditioning ``H``; ``w_q``, ``w_k`` (E, D) the projections;
    ``gamma_q``, ``beta_q``, ``gamma_k`` the LayerNorms' affine parts (the key norm has no bias);
    ``offset`` and ``strength`` the raw ``t`` and ``b``; ``mask`` from :func:`signed_mask`.
    """
    return _SignedDelta.apply(
        h, x2, w_q, w_k, gamma_q, beta_q, gamma_k, offset, strength, mask, bound, eps
    )
