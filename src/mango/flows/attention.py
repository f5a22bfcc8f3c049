"""Invertible Cross-Attention (ICA): attention whose matrix is triangular with a positive diagonal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.base import FlowLayer
from mango.flows.fused import causal_attention, fused_available
from mango.flows.partitions import num_variants, partition_indices, validate_tokens
from mango.flows.token_mixing import LUTokenMixing

#: Attention-matrix forms ``A = c0 * I + c1 * softmax(S)`` as ``(c0, c1)``; "gated" learns c1 = α.
ATTENTION_FORMS = ("gated", "softmax", "half", "identity_plus")


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
    or pseudo-inverse). On the CPU the forward pass uses a fused attention kernel that never forms ``A``
    (``fused=True``, :mod:`mango.flows.fused`); ``fused=False`` selects the dense path.
    Forms: ``"gated"`` (default) ``c_0 = 1 - α, c_1 = α`` with ``α = sigmoid(g)``
    learned and ``g`` initialised at ``gate_init`` (-4, α ≈ 0.02: near identity, DESIGN.md §3b);
    ``"softmax"`` ``(0, 1)`` the paper's form; ``"half"`` ``(½, ½)``; ``"identity_plus"`` ``(1, 1)``
    as in the official code. The temperature ``τ = exp(t)`` is clamped to ``[1e-2, 1e4]``.

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
        attention: str = "gated",
        key_dim: int | None = None,
        gate_init: float = -4.0,
        fused: bool = True,
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
        self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(key_dim)))
        self.gate = nn.Parameter(torch.tensor(float(gate_init))) if attention == "gated" else None
        below_diagonal = torch.tril(torch.ones(self.l2, self.l2, dtype=torch.bool), -1)
        self.register_buffer("mask", below_diagonal, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, tokens={self.tokens}, partition={self.partition!r}, "
            f"variant={self.variant}, attention={self.attention_form!r}, X1={self.l1}, X2={self.l2}"
        )

    @property
    def temperature(self) -> Tensor:
        """The positive softmax temperature τ."""
        return self.log_temperature.clamp(math.log(1e-2), math.log(1e4)).exp()

    def log_coefficients(self) -> tuple[Tensor, Tensor]:
        """``(log c0, log c1)`` of ``A = c0 I + c1 P`` (``log c0`` may be ``-inf``)."""
        device = self.log_temperature.device
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
        a, _, p = self._attention(x.index_select(1, self.idx1))
        return (a, p) if with_probabilities else a

    def _merge(self, y1: Tensor, y2: Tensor, reversed_order: bool = False) -> Tensor:
        """Put X1 and X2 tokens back in place: two scatters into one new tensor."""
        idx1, idx2 = (
            (self.idx1_reversed, self.idx2_reversed) if reversed_order else (self.idx1, self.idx2)
        )
        y = y1.new_empty(y1.shape[0], self.length, y1.shape[2])
        return y.index_copy_(1, idx1, y1).index_copy_(1, idx2, y2)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mixing is not None:
            factors = self.mixing.factors(x.dtype)
            x = self.mixing.mix(x, factors)
        if self.fused and fused_available(x):
            x1, x2 = x.index_select(1, self.idx1_reversed), x.index_select(1, self.idx2_reversed)
            y2, log_diag = self._apply_fused(x1, x2)
            y = self._merge(x1, y2, reversed_order=True)
        else:
            x1, x2 = x.index_select(1, self.idx1), x.index_select(1, self.idx2)
            a, log_diag, _ = self._attention(x1)
            y = self._merge(x1, a @ x2)
        if self.mixing is not None:
            y = self.mixing.unmix(y, factors)
        return y, x.shape[2] * log_diag.sum(-1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.mixing is not None:
            factors = self.mixing.factors(y.dtype)
            y = self.mixing.mix(y, factors)
        y1, y2 = y.index_select(1, self.idx1), y.index_select(1, self.idx2)
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
