"""The signed form's fast paths: the one-node layer and the two-head causal attention.

The signed form (:class:`~mango.flows.signed_attention.SignedCrossAttention`) maps ``X2`` to
``X2 + Δ`` with

.. math::

    q = \\mathrm{LN}_q(H W_q), \\quad k = \\mathrm{LN}_k(H W_k), \\quad
    S = q k^{\\top} / τ, \\quad P^{\\pm} = \\mathrm{softmax}(\\pm S \\text{ masked to } j > i),

    N = \\tfrac12 (P^{+} - P^{-}), \\qquad Δ = β N X_2,

with ``τ = √d_k (1 + softplus(t))`` (:func:`temperature`) and ``β = β_{max} \\tanh(b)``
(:func:`strength`). The last row of ``N`` has no ``j > i`` and is zero; here its mask keeps the
diagonal, so both softmaxes are one-hot in that row and their difference is an exact zero (with a
zero gradient), and ``±S`` share one softmax call.

:func:`signed_layer` (route ``Route.SIGNED_ONE_NODE``, short sequences) runs the whole layer
(with the ActNorm before it, and LICA's token mixing) as one autograd node: a forward of about
twenty kernels that keeps ``P^{\\pm}`` (``2 · B · L2²`` numbers), and a backward written by hand.
With ``G = β dΔ X_2^{\\top}`` (``∂ℓ/∂N``) and ``r^{\\pm}`` the row sums of ``G ∘ P^{\\pm}``,

.. math::

    \\frac{\\partial \\ell}{\\partial X_2} = β N^{\\top} dΔ, \\qquad
    \\frac{\\partial \\ell}{\\partial S} = \\tfrac12 \\big(P^{+} ∘ (G - r^{+})
        + P^{-} ∘ (G - r^{-})\\big),

then the usual products for ``q``, ``k``, ``τ`` and the two LayerNorms; inside the input-only
product of the detached NLL (:func:`~mango.flows.backprop.input_gradients_only`) the parameter
gradients are skipped. Longer sequences (route ``Route.SIGNED_CAUSAL``) use
:func:`signed_causal_attention`: one ``scaled_dot_product_attention`` call with two heads, which
never forms ``P^{\\pm}``. Both are tested equal to the dense form (``tests/flows/test_kernels.py``).

Example:
    >>> from mango.flows import ActNorm, InvertibleCrossAttention
    >>> layer = InvertibleCrossAttention(3, (4, 5), "mmca", 1).double()
    >>> norm = ActNorm(3).double().eval()
    >>> with torch.no_grad():
    ...     for p in [*layer.parameters(), *norm.parameters()]:
    ...         _ = p.add_(0.3 * torch.randn_like(p))
    >>> x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    >>> weights, affine = layer.kernel_weights(x.dtype), NormWeights.of(norm, x.dtype)
    >>> torch.allclose(signed_layer(x, weights, affine), layer(norm(x)[0])[0])
    True
    >>> torch.autograd.gradcheck(lambda x: signed_layer(x, weights, affine), (x,))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.backprop import input_gradients_only


def temperature(offset: Tensor, key_dim: int) -> Tensor:
    """``τ = √d_k (1 + softplus(t))``: never below ``√d_k``."""
    return math.sqrt(key_dim) * (1 + F.softplus(offset))


def strength(offset: Tensor, bound: float) -> Tensor:
    """``β = β_max tanh(b)``."""
    return bound * torch.tanh(offset)


def signed_mask(l2: int, device: torch.device | None = None) -> Tensor:
    """``True`` where ``P^±`` is masked: ``j <= i``, except the last row's diagonal (see above)."""
    mask = torch.tril(torch.ones(l2, l2, dtype=torch.bool, device=device))
    mask[-1, -1] = False
    return mask


def signed_probabilities(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
    """``(P+, P-)`` stacked, (2, B, L2, L2), from queries ``q`` (already divided by ``τ``) and keys."""
    s = torch.bmm(q, k.mT)
    return torch.softmax(torch.stack([s, -s]).masked_fill_(mask, -math.inf), dim=-1)


@dataclass(frozen=True)
class SignedWeights:
    """What :func:`signed_layer` reads of one signed ICA layer (its parameters, not copies).

    ``interpolation`` is the (L2, L1) map from ``X1`` to the ``L2`` conditioning rows (``None``
    when ``L1 = L2``); ``mixing`` LICA's ``W`` and ``unmixing_columns`` the ``X2`` columns of
    ``W⁻¹`` (both ``None`` without token mixing); these three in the tokens' dtype.
    """

    query: Tensor  # W_q (E, D)
    key: Tensor  # W_k (E, D)
    query_norm_weight: Tensor
    query_norm_bias: Tensor
    key_norm_weight: Tensor
    temperature_offset: Tensor  # t of τ
    strength_offset: Tensor  # b of β
    strength_bound: float  # β_max
    eps: float  # of both LayerNorms
    idx1: Tensor
    idx2: Tensor
    mask: Tensor  # signed_mask(L2)
    interpolation: Tensor | None
    mixing: Tensor | None
    unmixing_columns: Tensor | None

    def parameters(self) -> tuple[Tensor, ...]:
        """``(W_q, W_k, γ_q, b_q, γ_k, t, b)``, in the order of the kernel's gradients."""
        return (
            self.query,
            self.key,
            self.query_norm_weight,
            self.query_norm_bias,
            self.key_norm_weight,
            self.temperature_offset,
            self.strength_offset,
        )


@dataclass(frozen=True)
class NormWeights:
    """The per-channel affine map ``x e^{s} + b`` of an ActNorm run just before the layer."""

    log_scale: Tensor
    bias: Tensor

    @classmethod
    def of(cls, norm: nn.Module, dtype: torch.dtype) -> NormWeights:
        """``(s, b)`` of ``norm`` (an :class:`~mango.flows.ActNorm`), cast to ``dtype``."""
        return cls(norm.log_scale.to(dtype), norm.bias.to(dtype))


def _delta_forward(
    h: Tensor, x2: Tensor, params: tuple[Tensor, ...], mask: Tensor, bound: float, eps: float
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``Δ = β N X2`` and what its backward needs; ``params = (W_q, W_k, γ_q, b_q, γ_k, t, b)``.

    ``2N = P+ - P-`` is kept unscaled and the ``½`` goes into ``β``.
    """
    w_q, w_k, gamma_q, beta_q, gamma_k, offset, strength = params
    batch, l2, _ = h.shape
    e = w_q.shape[0]
    inv_tau = 1 / temperature(offset, e)
    tanh_b = torch.tanh(strength)
    u = F.linear(h, torch.cat([w_q, w_k])).view(batch, l2, 2, e)
    normed, _, rstd = torch.native_layer_norm(u, (e,), None, None, eps)
    q = torch.addcmul(beta_q, normed[:, :, 0], gamma_q)
    q_scaled = q * inv_tau
    k = normed[:, :, 1] * gamma_k
    p = signed_probabilities(q_scaled, k, mask)
    n2 = p[0] - p[1]
    m = torch.bmm(n2, x2)
    saved = (h, x2, w_q, w_k, gamma_q, gamma_k, normed, rstd, q, q_scaled, k, p, n2, m)
    return m * (0.5 * bound * tanh_b), (*saved, inv_tau, offset, tanh_b)


def _delta_backward(
    saved: tuple[Tensor, ...], grad: Tensor, bound: float, params: bool
) -> tuple[Tensor | None, ...]:
    """``(∂ℓ/∂H, ∂ℓ/∂X2, ∂ℓ/∂params...)`` of :func:`_delta_forward` for ``grad = ∂ℓ/∂Δ``.

    Without ``params`` the parameter gradients are ``None`` (an input-only product).
    """
    h, x2, w_q, w_k, gamma_q, gamma_k, normed, rstd, q, q_scaled, k, p, n2, m = saved[:14]
    inv_tau, offset, tanh_b = saved[14:]
    e = w_q.shape[0]
    grad_m = grad * (0.5 * bound * tanh_b)
    grad_x2 = torch.bmm(n2.mT, grad_m)
    g = torch.bmm(grad_m, x2.mT)  # ∂ℓ/∂P+ = -∂ℓ/∂P-
    gp = p * g
    # ∂ℓ/∂S for S = (q/τ) kᵀ: the softmax backward of both signs (∂(±S)/∂S = ±1, ∂ℓ/∂P± = ±g)
    grad_s = torch.addcmul(gp, p, gp.sum(-1, keepdim=True), value=-1).sum(0)
    a = torch.bmm(grad_s, k)  # ∂ℓ/∂(q/τ)
    grad_q = a * inv_tau
    grad_k = torch.bmm(grad_s.mT, q_scaled)
    gn = torch.stack([grad_q * gamma_q, grad_k * gamma_k], 2)
    grad_u = rstd * (gn - gn.mean(-1, keepdim=True) - normed * (gn * normed).mean(-1, keepdim=True))
    grad_u = grad_u.reshape(*h.shape[:2], 2 * e)  # reshape, not flatten: vmap (jacobian)
    grad_h = grad_u @ torch.cat([w_q, w_k])
    if not params:
        return (grad_h, grad_x2, *[None] * 7)
    grad_strength = (grad * m).sum() * (0.5 * bound) * (1 - tanh_b.square())
    # τ = √e (1 + softplus(t)): ∂τ⁻¹/∂t = -τ⁻² √e sigmoid(t)
    grad_inv_tau = (a * q).sum()
    grad_offset = -grad_inv_tau * inv_tau.square() * math.sqrt(e) * torch.sigmoid(offset)
    grad_w = grad_u.reshape(-1, 2 * e).mT @ h.reshape(-1, h.shape[2])
    return (
        grad_h,
        grad_x2,
        grad_w[:e],
        grad_w[e:],
        (grad_q * normed[:, :, 0]).sum((0, 1)),
        grad_q.sum((0, 1)),
        (grad_k * normed[:, :, 1]).sum((0, 1)),
        grad_offset,
        grad_strength,
    )


class _SignedLayer(torch.autograd.Function):
    """The whole signed ICA layer (optionally after an ActNorm) as one autograd node.

    ``X' = X e^{s} + b`` (ActNorm; skipped without ``log_scale``), ``U = X'`` or ``W X'`` (LICA),
    ``Y = X' + E2 Δ`` or ``X' + C Δ`` with ``C = W⁻¹ E2`` (LICA), ``Δ`` from :func:`_delta_forward`
    on ``H = U[idx1]`` (or ``M U[idx1]``, the interpolation ``M``) and ``X2 = U[idx2]``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        log_scale: Tensor | None,
        bias: Tensor | None,
        weight: Tensor | None,
        columns: Tensor | None,
        interp: Tensor | None,
        idx1: Tensor,
        idx2: Tensor,
        mask: Tensor,
        bound: float,
        eps: float,
        *params: Tensor,
    ) -> Tensor:
        scale = None if log_scale is None else log_scale.exp()
        xa = x if scale is None else torch.addcmul(bias, x, scale)
        u = xa if weight is None else torch.matmul(weight, xa)
        x1 = u.index_select(1, idx1)
        h = x1 if interp is None else torch.matmul(interp, x1)
        delta, saved = _delta_forward(h, u.index_select(1, idx2), params, mask, bound, eps)
        y = xa.index_add(1, idx2, delta) if weight is None else xa + torch.matmul(columns, delta)
        ctx.save_for_backward(x, scale, xa, weight, columns, interp, idx1, idx2, delta, *saved)
        ctx.bound = bound
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, scale, xa, weight, columns, interp, idx1, idx2, delta, *saved = ctx.saved_tensors
        params = not input_gradients_only()
        grad_columns = grad_weight = grad_log_scale = grad_bias = None
        if weight is None:
            grad_delta = grad_y.index_select(1, idx2)
        else:
            grad_delta = torch.matmul(columns.mT, grad_y)
            if params:
                grad_columns = torch.bmm(grad_y, delta.mT).sum(0)  # no einsum: vmap
        grad_h, grad_x2, *grad_params = _delta_backward(tuple(saved), grad_delta, ctx.bound, params)
        grad_x1 = grad_h if interp is None else torch.matmul(interp.mT, grad_h)
        if weight is None:
            grad_xa = grad_y.index_add(1, idx1, grad_x1).index_add_(1, idx2, grad_x2)
        else:
            grad_u = (
                torch.empty_like(grad_y).index_copy_(1, idx1, grad_x1).index_copy_(1, idx2, grad_x2)
            )
            grad_xa = grad_y + torch.matmul(weight.mT, grad_u)
            if params:
                grad_weight = torch.bmm(grad_u, xa.mT).sum(0)
        grad_x = grad_xa if scale is None else grad_xa * scale
        if scale is not None and params:
            grad_log_scale = (grad_x * x).sum((0, 1))
            grad_bias = grad_xa.sum((0, 1))
        return (
            grad_x,
            grad_log_scale,
            grad_bias,
            grad_weight,
            grad_columns,
            None,
            None,
            None,
            None,
            None,
            None,
            *grad_params,
        )


def signed_layer(x: Tensor, weights: SignedWeights, norm: NormWeights | None = None) -> Tensor:
    """``Y`` of a signed ICA layer (its ``weights``) as one autograd node.

    With ``norm`` (an ActNorm run just before it) the node computes ``layer(actnorm(x))``; the
    ActNorm's log-det is the caller's. For LICA the attention acts on ``U = W X``, and
    ``W⁻¹ (U + E2 Δ) = X + W⁻¹ E2 Δ``: the unmixing is a product with ``L2`` columns of ``W⁻¹``
    (:meth:`~mango.flows.LUTokenMixing.inverse_columns`), and ``X`` passes through exactly.
    """
    return _SignedLayer.apply(
        x,
        None if norm is None else norm.log_scale,
        None if norm is None else norm.bias,
        weights.mixing,
        weights.unmixing_columns,
        weights.interpolation,
        weights.idx1,
        weights.idx2,
        weights.mask,
        weights.strength_bound,
        weights.eps,
        *weights.parameters(),
    )


def signed_causal_attention(
    x: Tensor, x2: Tensor, q: Tensor, k: Tensor, beta: Tensor, idx2: Tensor
) -> Tensor:
    """``merge(X1, X2 + β N X2)`` by one attention call, without forming ``N``.

    ``x2``, ``q`` (already divided by ``τ``) and ``k`` are in **reversed** token order and
    ``idx2`` are the reversed positions of ``X2`` in ``x``. There the mask ``j > i`` is strictly
    causal: row ``r >= 1`` attends columns ``< r``, which is the causal mask of queries ``1..``
    against keys and values ``..L2-2``. ``P+`` and ``P-`` are two heads, with queries ``±q``.
    """
    q = q[:, 1:]
    heads = torch.stack([q, -q], 1)
    keys = k[:, :-1, None].transpose(1, 2).expand(-1, 2, -1, -1)
    values = x2[:, :-1, None].transpose(1, 2).expand(-1, 2, -1, -1)
    both = F.scaled_dot_product_attention(heads, keys, values, is_causal=True, scale=1.0)
    # rows 1.. of 2 N X2, reversed order, added into X's X2 rows; the CPU kernel turns NaN
    # queries into finite output, so 0 · Σq keeps a non-finite query visible to the flow's
    # NaN guard (no device sync)
    coefficient = 0.5 * beta + 0.0 * q.sum((1, 2), keepdim=True)
    return x.index_add(1, idx2[1:], (both[:, 0] - both[:, 1]) * coefficient)
