"""Invertible Cross-Attention (ICA): attention whose matrix is triangular with a positive diagonal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.base import FlowLayer
from mango.flows.fused import causal_attention, fused_available
from mango.flows.partitions import num_variants, partition_indices, validate_tokens
from mango.flows.signed import (
    DENSE_MAX_TOKENS,
    signed_layer,
    signed_mask,
    signed_solve,
    signed_strength,
    signed_temperature,
)
from mango.flows.token_mixing import LUTokenMixing

#: Attention-matrix forms. "signed": ``A = I + β N`` (unit diagonal, volume preserving); the
#: others ``A = c0 * I + c1 * softmax(S)``, where "gated" learns c1 = α = sigmoid(g).
ATTENTION_FORMS = ("signed", "gated", "softmax", "half", "identity_plus")


class InvertibleCrossAttention(FlowLayer):
    """Invertible cross-attention over a token partition (MMCA, IMCA or LICA).

    The partition (see :mod:`mango.flows.partitions`) splits the ``L`` tokens into ``X1`` (``L1``
    tokens, passed through) and ``X2`` (``L2`` tokens, transformed). From ``X1`` alone,

    .. math::

        Q = \\mathrm{LN}(H W_q), \\quad K = \\mathrm{LN}(H W_k), \\quad
        S = Q K^{\\top} / \\tau, \\quad P = \\mathrm{softmax}(S \\text{ masked to } j \\ge i),

    where ``H = X1`` when ``L1 = L2`` and otherwise ``X1`` linearly interpolated along the token axis
    to ``L2`` rows (any map of ``X1`` keeps the layer invertible). With ``A = c_0 I + c_1 P``,

    .. math::

        Y_1 = X_1, \\quad Y_2 = A X_2, \\qquad
        \\log|\\det J| = D \\sum_{i=1}^{L_2} \\log A_{ii}
                      = D \\sum_i \\log\\big(c_0 + c_1 P_{ii}\\big).

    ``A`` is upper-triangular with a positive diagonal, so the inverse recomputes ``A`` from
    ``Y_1 = X_1`` and solves ``A X_2 = Y_2`` by back substitution (no dense determinant, inverse
    or pseudo-inverse). On the CPU (float32, float64) and on CUDA (float32) the forward pass of
    these forms uses a fused attention kernel that never forms ``A`` (``fused=True``,
    :mod:`mango.flows.fused`); elsewhere, and with ``fused=False``, the dense path runs.
    Forms ``c_0 I + c_1 P``: ``"gated"`` ``c_0 = 1 - α, c_1 = α`` with ``α = sigmoid(g)``
    learned and ``g`` initialised at ``gate_init`` (-4, α ≈ 0.02, docs/design.md);
    ``"softmax"`` ``(0, 1)`` the paper's form; ``"half"`` ``(½, ½)``; ``"identity_plus"``
    ``(1, 1)`` as in the official code. Their temperature ``τ = exp(t)`` is clamped to
    ``[1e-2, 1e4]``.

    The default form ``"signed"`` is volume preserving and can be strong without losing the
    inverse. With ``P^{±} = \\mathrm{softmax}(\\pm S)`` masked to ``j > i`` (the last row empty),

    .. math::

        N = \\tfrac12 (P^{+} - P^{-}), \\quad A = I + β N, \\quad β = β_{max} \\tanh(b),
        \\qquad \\log|\\det J| = 0,

    ``N`` is strictly upper-triangular with zero row sums (``A 1 = 1``: the layer never scales
    the tokens) and ``\\|N\\|_\\infty \\le 1``, so ``\\|A^{-1}\\|_\\infty \\le 1/(1-β)``. The
    strength ``β`` is a linear gate: ``b = 0`` at initialisation (the identity) with slope
    ``β_{max}`` (``strength_bound``), and the log-det does not push it back to zero as it does
    the convex gate. The temperature has a floor, ``τ = \\sqrt{d_k} (1 + \\mathrm{softplus}(t))``.

    Setting ``attention_enabled = False`` switches the cross-token attention off (``Y = X``,
    log-det 0: every form reduces to the identity, LICA's ``W^{-1} W`` included); it is the
    ablation behind ``mango eval --ablate attention``.

    LICA first mixes all tokens with a learned invertible ``W`` (:class:`LUTokenMixing`), applies
    the attention to the halves of ``W x`` and maps back with ``W^{-1}``; the two log-dets cancel.

    References:
        Truong et al., "MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion
        Learning", NeurIPS 2025 (arXiv 2508.10133).

    Example:
        >>> layer = InvertibleCrossAttention(dim=8, tokens=(6, 4), partition="mmca", variant=1)
        >>> x = torch.randn(2, 10, 8)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(logdet_inv, -logdet)
        (True, True)
    """

    def __init__(
        self,
        dim: int,
        tokens: tuple[int, ...],
        partition: str,
        variant: int,
        attention: str = "signed",
        key_dim: int | None = None,
        gate_init: float = -4.0,
        fused: bool = True,
        strength_bound: float = 0.5,
    ) -> None:
        super().__init__()
        self.tokens = validate_tokens(tokens)
        if attention not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {attention!r}")
        self.dim = dim
        self.length = sum(self.tokens)
        self.partition = partition
        self.variant = variant
        self.attention_form = attention
        self.fused = fused
        self.signed = attention == "signed"
        self.attention_enabled = True
        if self.signed and not 0 < strength_bound < 1:
            raise ValueError(f"strength_bound must be in (0, 1), got {strength_bound}")
        self.strength_bound = strength_bound
        idx1, idx2 = partition_indices(self.tokens, partition, variant)
        self.register_buffer("idx1", idx1, persistent=False)
        self.register_buffer("idx2", idx2, persistent=False)
        self.register_buffer("idx1_reversed", idx1.flip(0), persistent=False)
        self.register_buffer("idx2_reversed", idx2.flip(0), persistent=False)
        self.l1, self.l2 = len(idx1), len(idx2)
        self.mixing = LUTokenMixing(self.length) if partition == "lica" else None
        key_dim = key_dim or dim
        self.query = nn.Linear(dim, key_dim, bias=False)
        self.key = nn.Linear(dim, key_dim, bias=False)
        self.norm_q = nn.LayerNorm(key_dim)
        # A key bias adds q_i·b to every score of row i: softmax ignores it, so it has no bias.
        self.norm_k = nn.LayerNorm(key_dim, bias=False)
        self.key_dim = key_dim
        if self.signed:  # τ = √d (1 + softplus(t)): t = -4 starts at τ ≈ √d, never below it
            self.temperature_offset = nn.Parameter(torch.tensor(-4.0))
            self.strength = nn.Parameter(torch.tensor(0.0))
        else:
            self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(key_dim)))
        self.gate = nn.Parameter(torch.tensor(float(gate_init))) if attention == "gated" else None
        below_diagonal = torch.tril(torch.ones(self.l2, self.l2, dtype=torch.bool), -1)
        self.register_buffer("mask", below_diagonal, persistent=False)
        # the signed form's strictly upper mask, for rows 0..L2-2 (the last row has no j > i)
        on_or_below = torch.tril(torch.ones(self.l2 - 1, self.l2, dtype=torch.bool))
        self.register_buffer("strict_mask", on_or_below, persistent=False)
        self.register_buffer("signed_mask", signed_mask(self.l2), persistent=False)
        # the interpolation of X1 to L2 rows as a (L2, L1) matrix, for the one-node signed pass
        # (float64, cast at use, so that a float64 layer interpolates exactly)
        interp = None
        if self.l1 != self.l2:
            eye = torch.eye(self.l1, dtype=torch.float64)[None]
            interp = F.interpolate(eye, size=self.l2, mode="linear", align_corners=True)[0].T
        self.register_buffer("conditioning_map", interp, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, tokens={self.tokens}, partition={self.partition!r}, "
            f"variant={self.variant}, attention={self.attention_form!r}, X1={self.l1}, X2={self.l2}"
        )

    @property
    def temperature(self) -> Tensor:
        """The positive softmax temperature τ."""
        if self.signed:
            return signed_temperature(self.temperature_offset, self.key_dim)
        return self.log_temperature.clamp(math.log(1e-2), math.log(1e4)).exp()

    @property
    def one_node(self) -> bool:
        """Whether the forward is one autograd node: signed, fused and ``L2 <= DENSE_MAX_TOKENS``."""
        return self.signed and self.fused and self.l2 <= DENSE_MAX_TOKENS

    @property
    def strength_value(self) -> Tensor:
        """How strongly the layer mixes: β of the signed form, α of the gated one, else ``c1``."""
        if self.signed:
            return signed_strength(self.strength, self.strength_bound)
        return self.log_coefficients()[1].exp()

    def _signed_mixing(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, P+)`` of the signed form, each (B, L2, L2) and zero in its last row."""
        q, k = self._queries_keys(x1)
        s = (q @ k.transpose(1, 2))[:, :-1] / self.temperature.to(x1.dtype)
        positive = torch.softmax(s.masked_fill(self.strict_mask, -math.inf), dim=-1)
        negative = torch.softmax((-s).masked_fill(self.strict_mask, -math.inf), dim=-1)
        last_row = s.new_zeros(s.shape[0], 1, s.shape[2])
        return (
            torch.cat([0.5 * (positive - negative), last_row], 1),
            torch.cat([positive, last_row], 1),
        )

    def _signed_fused(self, x: Tensor) -> Tensor:
        """``merge(X1, X2 + β N X2)`` by one attention call, without forming ``N``.

        In reversed token order the mask ``j > i`` is strictly causal: row ``r >= 1`` attends
        columns ``< r``, which is the causal mask of queries ``1..`` against keys and values
        ``..L2-2``. ``P+`` and ``P-`` are two heads, with queries ``q/τ`` and ``-q/τ``.
        """
        x1, x2 = x.index_select(1, self.idx1_reversed), x.index_select(1, self.idx2_reversed)
        q, k = self._queries_keys(x1, scale=1.0 / self.temperature.to(x.dtype))
        q = q[:, 1:]
        heads = torch.stack([q, -q], 1)
        keys = k[:, :-1, None].transpose(1, 2).expand(-1, 2, -1, -1)
        values = x2[:, :-1, None].transpose(1, 2).expand(-1, 2, -1, -1)
        both = F.scaled_dot_product_attention(heads, keys, values, is_causal=True, scale=1.0)
        # rows 1.. of 2 N X2, reversed order, added into X's X2 rows; the CPU kernel turns NaN
        # queries into finite output, so 0 · Σq keeps a non-finite query visible to the flow's
        # NaN guard (no device sync)
        coefficient = 0.5 * self.strength_value.to(x.dtype) + 0.0 * q.sum((1, 2), keepdim=True)
        return x.index_add(1, self.idx2_reversed[1:], (both[:, 0] - both[:, 1]) * coefficient)

    def _signed_matrix(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, P+)`` of the signed form: ``A = I + β N``."""
        n, positive = self._signed_mixing(x1)
        eye = torch.eye(self.l2, dtype=x1.dtype, device=x1.device)
        return eye + self.strength_value.to(x1.dtype) * n, positive

    def _signed_inverse(self, y1: Tensor, y2: Tensor) -> Tensor:
        """``X2`` from ``A X2 = Y2``: with autograd, the dense ``A`` and one triangular solve;
        under ``no_grad``, by blocks of rows without forming ``A`` (:func:`signed_solve`)."""
        if torch.is_grad_enabled():
            a = self._signed_matrix(y1)[0]
            return torch.linalg.solve_triangular(a, y2, upper=True, unitriangular=True)
        q, k = self._queries_keys(y1, scale=1.0 / self.temperature.to(y1.dtype))
        return signed_solve(q, k, y2, self.strength_value.to(y1.dtype))

    def log_coefficients(self) -> tuple[Tensor, Tensor]:
        """``(log c0, log c1)`` of ``A = c0 I + c1 P`` (``log c0`` may be ``-inf``)."""
        device = self.query.weight.device
        if self.gate is not None:
            return F.logsigmoid(-self.gate), F.logsigmoid(self.gate)
        c0, c1 = {"softmax": (0.0, 1.0), "half": (0.5, 0.5), "identity_plus": (1.0, 1.0)}[
            self.attention_form
        ]
        log = lambda c: torch.tensor(math.log(c) if c > 0 else -math.inf, device=device)  # noqa: E731
        return log(c0), log(c1)

    def _conditioning(self, x1: Tensor) -> Tensor:
        if self.l1 == self.l2:
            return x1
        resampled = F.interpolate(
            x1.transpose(1, 2), size=self.l2, mode="linear", align_corners=True
        )
        return resampled.transpose(1, 2)

    def _queries_keys(self, x1: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(Q, K)``; with ``scale``, ``Q · scale`` folded into the query norm's affine part."""
        h = self._conditioning(x1)
        k = self.norm_k(self.key(h))
        if scale is None:
            return self.norm_q(self.query(h)), k
        norm = self.norm_q
        weight, bias = norm.weight * scale, norm.bias * scale
        return F.layer_norm(self.query(h), norm.normalized_shape, weight, bias, norm.eps), k

    def scores(self, x1: Tensor) -> Tensor:
        """Masked attention logits ``S`` (B, L2, L2) from the conditioning tokens ``x1``."""
        q, k = self._queries_keys(x1)
        s = q @ k.transpose(1, 2) / self.temperature.to(x1.dtype)
        return s.masked_fill(self.mask, -math.inf)

    def _apply_fused(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``(A X2, log diag A)`` without forming ``A`` (see :mod:`mango.flows.fused`).

        ``x1`` and ``x2`` arrive in **reversed** token order, where the mask ``j >= i`` is the
        causal mask the kernel implements; reversing commutes with the interpolation of ``x1``.
        """
        q, k = self._queries_keys(x1, scale=1.0 / self.temperature.to(x1.dtype))
        attended, lse = causal_attention(q, k, x2)
        log_p_diag = torch.linalg.vecdot(q, k) - lse
        log_c0, log_c1 = (c.to(x1.dtype) for c in self.log_coefficients())
        if self.gate is not None:  # (1 - α) X2 + α P X2 in one op
            y2 = torch.lerp(x2, attended, log_c1.exp())
        else:
            y2 = log_c0.exp() * x2 + log_c1.exp() * attended
        return y2, torch.logaddexp(log_c0, log_c1 + log_p_diag)

    def _attention(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(A, log diag A, P)``: (B, L2, L2), (B, L2), (B, L2, L2)."""
        s = self.scores(x1)
        log_p = torch.log_softmax(s, dim=-1)
        log_c0, log_c1 = (c.to(x1.dtype) for c in self.log_coefficients())
        eye = torch.eye(self.l2, dtype=x1.dtype, device=x1.device)
        p = log_p.exp()
        a = log_c0.exp() * eye + log_c1.exp() * p
        log_diag = torch.logaddexp(log_c0, log_c1 + log_p.diagonal(dim1=-2, dim2=-1))
        return a, log_diag, p

    def _attention_in_place(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, log diag A)`` like :meth:`_attention`, reusing one buffer (no autograd)."""
        q, k = self._queries_keys(x1)
        a = torch.bmm(q, k.transpose(1, 2)).mul_(1.0 / self.temperature.to(x1.dtype))
        a.masked_fill_(self.mask, -math.inf)
        lse = torch.logsumexp(a, dim=-1)
        log_p_diag = a.diagonal(dim1=-2, dim2=-1) - lse
        log_c0, log_c1 = (c.to(x1.dtype) for c in self.log_coefficients())
        a.sub_(lse.unsqueeze(-1)).exp_().mul_(log_c1.exp())
        a.diagonal(dim1=-2, dim2=-1).add_(log_c0.exp())
        return a, torch.logaddexp(log_c0, log_c1 + log_p_diag)

    def attention_matrix(
        self, x: Tensor, with_probabilities: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The matrix ``A`` (B, L2, L2) this layer applies to ``X2`` for input tokens ``x``.

        With ``with_probabilities=True`` return ``(A, P)``: ``P`` is the softmax part, the map of
        which ``X2`` tokens each output token gathers, as chosen by ``X1``.
        """
        if self.mixing is not None:
            x = self.mixing(x)[0]
        x1 = x.index_select(1, self.idx1)
        if self.signed:
            a, p = self._signed_matrix(x1)
        else:
            a, _, p = self._attention(x1)
        return (a, p) if with_probabilities else a

    def effect_terms(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(‖Y2 - X2‖², ‖X2‖²)`` per sample, from this layer's input ``x`` and output ``y``.

        For LICA, X2 and Y2 are taken in the mixed token order, where the attention acts.
        """
        if self.mixing is not None:
            factors = self.mixing.factors(x.dtype)
            x, y = self.mixing.mix(x, factors), self.mixing.mix(y, factors)
        x2 = x.index_select(1, self.idx2)
        change = y.index_select(1, self.idx2) - x2
        return change.square().flatten(1).sum(1), x2.square().flatten(1).sum(1)

    def _merge(self, y1: Tensor, y2: Tensor, reversed_order: bool = False) -> Tensor:
        """Put X1 and X2 tokens back in place: two scatters into one new tensor."""
        idx1, idx2 = (
            (self.idx1_reversed, self.idx2_reversed) if reversed_order else (self.idx1, self.idx2)
        )
        y = y1.new_empty(y1.shape[0], self.length, y1.shape[2])
        return y.index_copy_(1, idx1, y1).index_copy_(1, idx2, y2)

    def _forward_mixed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The attention on (mixed) tokens: ``(merge(X1, A X2), log diag A)``."""
        if self.signed:
            if self.fused:
                y = self._signed_fused(x)
            else:
                x1, x2 = x.index_select(1, self.idx1), x.index_select(1, self.idx2)
                y = self._merge(
                    x1, x2 + self.strength_value.to(x.dtype) * (self._signed_mixing(x1)[0] @ x2)
                )
            return y, x.new_zeros(x.shape[0], self.l2)
        if self.fused and fused_available(x):
            x1, x2 = x.index_select(1, self.idx1_reversed), x.index_select(1, self.idx2_reversed)
            y2, log_diag = self._apply_fused(x1, x2)
            y = self._merge(x1, y2, reversed_order=True)
        else:
            x1, x2 = x.index_select(1, self.idx1), x.index_select(1, self.idx2)
            a, log_diag, _ = self._attention(x1)
            y = self._merge(x1, a @ x2)
        return y, log_diag

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.attention_enabled:
            return x, x.new_zeros(x.shape[0])
        if self.one_node:
            return signed_layer(self, x), x.new_zeros(x.shape[0])
        if self.mixing is not None:
            factors = self.mixing.factors(x.dtype)
            x = self.mixing.mix(x, factors)
        y, log_diag = self._forward_mixed(x)
        if self.mixing is not None:
            y = self.mixing.unmix(y, factors)
        return y, x.shape[2] * log_diag.sum(-1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.attention_enabled:
            return y, y.new_zeros(y.shape[0])
        if self.mixing is not None:
            factors = self.mixing.factors(y.dtype)
            y = self.mixing.mix(y, factors)
        y1, y2 = y.index_select(1, self.idx1), y.index_select(1, self.idx2)
        if self.signed:
            x2, log_diag = self._signed_inverse(y1, y2), y.new_zeros(y.shape[0], self.l2)
        else:
            if torch.is_grad_enabled():
                a, log_diag, _ = self._attention(y1)
            else:
                a, log_diag = self._attention_in_place(y1)
            x2 = torch.linalg.solve_triangular(a, y2, upper=True)
        x = self._merge(y1, x2)
        if self.mixing is not None:
            x = self.mixing.unmix(x, factors)
        return x, -y.shape[2] * log_diag.sum(-1)


def ica_layers(
    dim: int, tokens: tuple[int, ...], partition: str, **kwargs: object
) -> list[InvertibleCrossAttention]:
    """One :class:`InvertibleCrossAttention` per variant of ``partition`` for this token layout."""
    count = num_variants(partition, len(validate_tokens(tokens)))
    return [
        InvertibleCrossAttention(dim, tokens, partition, v, **kwargs)  # type: ignore[arg-type]
        for v in range(1, count + 1)
    ]
