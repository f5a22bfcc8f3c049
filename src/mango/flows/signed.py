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
:func:`signed_layer` runs the whole layer (with the ActNorm before it, and LICA's token mixing)
as one autograd node: a forward of about twenty kernels that keeps ``P^{\\pm}``
(``2 · B · L2²`` numbers), and a backward written by hand. With ``G = β dΔ X_2^{\\top}``
(``∂ℓ/∂N``) and ``r^{\\pm}`` the row sums of ``G ∘ P^{\\pm}``,

.. math::

    \\frac{\\partial \\ell}{\\partial X_2} = β N^{\\top} dΔ, \\qquad
    \\frac{\\partial \\ell}{\\partial S} = \\tfrac12 \\big(P^{+} ∘ (G - r^{+})
        + P^{-} ∘ (G - r^{-})\\big),

then the usual products for ``q``, ``k``, ``τ`` and the two LayerNorms; inside the input-only
product of the detached NLL (:func:`~mango.flows.backprop.input_gradients_only`) the parameter
gradients are skipped. Longer sequences use one ``scaled_dot_product_attention`` call with two
heads, which never forms ``P^{\\pm}`` (``InvertibleCrossAttention._signed_fused``). Without
autograd the inverse solves by blocks of rows (:func:`signed_solve`), which never forms ``A``.

Example:
    >>> from mango.flows import ActNorm, InvertibleCrossAttention
    >>> layer = InvertibleCrossAttention(3, (4, 5), "mmca", 1).double()
    >>> norm = ActNorm(3).double().eval()
    >>> with torch.no_grad():
    ...     for p in [*layer.parameters(), *norm.parameters()]:
    ...         _ = p.add_(0.3 * torch.randn_like(p))
    >>> x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    >>> torch.allclose(signed_layer(layer, x, norm), layer(norm(x)[0])[0])
    True
    >>> torch.autograd.gradcheck(lambda x: signed_layer(layer, x, norm), (x,))
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mango.flows.backprop import input_gradients_only

#: Longest ``X2`` (tokens) run by the dense one-node pass; longer ones use the flash kernel.
#: Measured on a 2-core CPU (docs/performance.md): up to here the dense pass is 1.6-1.8x faster;
#: at 96-128 tokens it gains only 6-19% and keeps 2·B·L2² numbers per layer, so the kernel runs.
DENSE_MAX_TOKENS = 64


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


def signed_probabilities(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
    """``(P+, P-)`` stacked, (2, B, L2, L2), from queries ``q`` (already divided by ``τ``) and keys."""
    s = torch.bmm(q, k.mT)
    return torch.softmax(torch.stack([s, -s]).masked_fill_(mask, -math.inf), dim=-1)


#: Rows per block of :func:`signed_solve`. Measured at L2 = 1024, B = 16, D = 64 on a 2-core CPU
#: (docs/performance.md): 31 ms at 32 or 64 rows, 35 ms at 96, 53 ms at 128; the dense
#: ``I + βN`` and one triangular solve took 151 ms.
SOLVE_BLOCK = 64


def signed_solve(
    q: Tensor, k: Tensor, y2: Tensor, beta: Tensor, block: int = SOLVE_BLOCK
) -> Tensor:
    """``X2`` with ``(I + β N) X2 = Y2``, ``N = ½(P⁺ - P⁻)`` over ``j > i``, by blocks of rows.

    Back substitution one block of ``m`` rows at a time, from the last: rows ``a..b`` need the
    scores of their strip ``S[a:b, a:]`` only. The columns after the block are already solved
    and move to the right-hand side; the block's own ``m x m`` part is unit upper-triangular and
    is solved directly:

    .. math::

        (I + β N_{aa}) X_{a:b} = Y_{a:b} - β N_{a, b:} X_{b:}.

    The answer is the dense solve's; no ``L2 x L2`` matrix is formed, and each strip stays in
    the cache. ``q`` is already divided by ``τ``; no gradient is kept (used by the inverse).

    Example:
        >>> q, k, y2 = torch.randn(2, 7, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 3)
        >>> p = signed_probabilities(q, k, signed_mask(7))
        >>> a = torch.eye(7) + 0.4 * 0.5 * (p[0] - p[1])
        >>> torch.allclose(a @ signed_solve(q, k, y2, torch.tensor(0.4), block=3), y2, atol=1e-5)
        True
    """
    l2 = y2.shape[1]
    x2 = torch.empty_like(y2)
    for start in range((l2 - 1) // block * block, -1, -block):
        stop = min(start + block, l2)
        rows = stop - start
        mask = torch.ones(rows, l2 - start, dtype=torch.bool, device=q.device).tril_()
        if stop == l2:
            mask[-1, -1] = False  # the last row, as in signed_mask: N is an exact zero there
        s = torch.bmm(q[:, start:stop], k[:, start:].mT)
        p = torch.softmax(torch.stack([s, -s]).masked_fill_(mask, -math.inf), dim=-1)
        n = p[0].sub_(p[1]).mul_(0.5 * beta)
        rhs = y2[:, start:stop]
        if stop < l2:
            rhs = rhs - torch.bmm(n[:, :, rows:], x2[:, stop:])
        diagonal = n[:, :, :rows]
        diagonal.diagonal(dim1=-2, dim2=-1).add_(1.0)
        x2[:, start:stop] = torch.linalg.solve_triangular(
            diagonal, rhs, upper=True, unitriangular=True
        )
    return x2


def _delta_forward(
    h: Tensor, x2: Tensor, params: tuple[Tensor, ...], mask: Tensor, bound: float, eps: float
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``Δ = β N X2`` and what its backward needs; ``params = (W_q, W_k, γ_q, b_q, γ_k, t, b)``.

    ``2N = P+ - P-`` is kept unscaled and the ``½`` goes into ``β``.
    """
    w_q, w_k, gamma_q, beta_q, gamma_k, offset, strength = params
    batch, l2, _ = h.shape
    e = w_q.shape[0]
    inv_tau = 1 / signed_temperature(offset, e)
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


def signed_layer(layer: Any, x: Tensor, actnorm: Any = None) -> Tensor:
    """``Y`` of the signed ICA ``layer`` (an :class:`InvertibleCrossAttention`) as one node.

    With ``actnorm`` (an :class:`ActNorm` run just before it) the node computes
    ``layer(actnorm(x))``; the ActNorm's log-det is the caller's. For LICA the attention acts on
    ``U = W X``, and ``W⁻¹ (U + E2 Δ) = X + W⁻¹ E2 Δ``: the unmixing is a product with ``L2``
    columns of ``W⁻¹`` (:meth:`LUTokenMixing.inverse_columns`), and ``X`` passes through exactly.
    """
    weight = columns = log_scale = bias = None
    if layer.mixing is not None:
        factors = layer.mixing.factors(x.dtype)
        weight = layer.mixing.weight(factors=factors)
        columns = layer.mixing.inverse_columns(factors, layer.idx2)
    if actnorm is not None:
        log_scale, bias = actnorm.log_scale.to(x.dtype), actnorm.bias.to(x.dtype)
    return _SignedLayer.apply(
        x,
        log_scale,
        bias,
        weight,
        columns,
        None if layer.conditioning_map is None else layer.conditioning_map.to(x.dtype),
        layer.idx1,
        layer.idx2,
        layer.signed_mask,
        layer.strength_bound,
        layer.norm_q.eps,
        layer.query.weight,
        layer.key.weight,
        layer.norm_q.weight,
        layer.norm_q.bias,
        layer.norm_k.weight,
        layer.temperature_offset,
        layer.strength,
    )
