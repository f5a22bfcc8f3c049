"""The invertible cross-attention base: partition, queries and keys, merge, LICA's token mixing.

One ICA layer per formula subclasses :class:`InvertibleCrossAttention`:
:class:`~mango.flows.signed_attention.SignedCrossAttention` (``A = I + β N``) and
:class:`~mango.flows.softmax_attention.SoftmaxCrossAttention` (``A = c0 I + c1 P``). Calling
``InvertibleCrossAttention(..., attention=form)`` builds the subclass of ``form``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.base import FlowLayer
from mango.flows.kernels import Route, select_route
from mango.flows.partitions import num_variants, partition_indices, validate_tokens
from mango.flows.token_mixing import LUTokenMixing

#: Attention-matrix forms. "signed": ``A = I + β N`` (unit diagonal, volume preserving); the
#: others ``A = c0 * I + c1 * softmax(S)``, where "gated" learns c1 = α = sigmoid(g).
ATTENTION_FORMS = ("signed", "gated", "softmax", "half", "identity_plus")


class InvertibleCrossAttention(FlowLayer):
    """Invertible cross-attention over a token partition (MMCA, IMCA or LICA).

    The partition (:mod:`mango.flows.partitions`) splits the ``L`` tokens into ``X1`` (``L1``
    tokens, passed through) and ``X2`` (``L2`` tokens, transformed). From ``X1`` alone,

    .. math::

        Q = \\mathrm{LN}(H W_q), \\quad K = \\mathrm{LN}(H W_k), \\quad S = Q K^{\\top} / \\tau,
        \\qquad Y_1 = X_1, \\quad Y_2 = A(S) X_2,

    where ``H = X1`` when ``L1 = L2`` and otherwise ``X1`` linearly interpolated along the token
    axis to ``L2`` rows (any map of ``X1`` keeps the layer invertible). ``A`` is upper-triangular
    with a positive diagonal; its formula is the subclass's (``attention`` picks it, see
    :data:`ATTENTION_FORMS`). The inverse recomputes ``A`` from ``Y1 = X1`` and solves
    ``A X2 = Y2`` by back substitution (no dense determinant, inverse or pseudo-inverse).

    LICA first mixes all tokens with a learned invertible ``W`` (:class:`LUTokenMixing`), applies
    the attention to the halves of ``W x`` and maps back with ``W^{-1}``; the two log-dets cancel.
    Setting ``attention_enabled = False`` makes the layer the identity (log-det 0, LICA's
    ``W^{-1} W`` included): the ablation behind ``mango eval --ablate attention``.

    Subclasses implement ``dense_forward`` / ``dense_inverse`` (the paper's math on ``X1, X2``)
    and ``_fast_forward`` / ``_fast_inverse`` for their routes of
    :func:`~mango.flows.kernels.select_route`.

    Args:
        dim: channels ``D`` per token.
        tokens: token counts ``(L_1, ..., L_M)`` of the modalities.
        partition: ``"mmca"``, ``"imca"`` or ``"lica"``.
        variant: which split of the partition, from 1 (:func:`num_variants`).
        attention: the form of ``A``, one of :data:`ATTENTION_FORMS`.
        key_dim: width ``d_k`` of queries and keys (default ``dim``).
        gate_init: initial ``g`` of the gated form's ``α = sigmoid(g)``.
        fused: use the fast paths of :mod:`mango.flows.kernels` (``False``: the dense reference).
        strength_bound: ``β_max`` of the signed form, in ``(0, 1)``.

    References:
        Truong et al., "MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion
        Learning", NeurIPS 2025 (arXiv 2508.10133).

    Example:
        >>> layer = InvertibleCrossAttention(dim=8, tokens=(6, 4), partition="mmca", variant=1)
        >>> type(layer).__name__, isinstance(layer, InvertibleCrossAttention)
        ('SignedCrossAttention', True)
        >>> x = torch.randn(2, 10, 8)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(logdet_inv, -logdet)
        (True, True)
    """

    #: The subclass of each attention form (filled in by the subclasses' modules).
    forms: ClassVar[dict[str, type[InvertibleCrossAttention]]] = {}
    signed: ClassVar[bool]

    def __new__(cls, *args: Any, **kwargs: Any) -> InvertibleCrossAttention:
        if cls is InvertibleCrossAttention:  # the factory: the class of the attention form
            form = args[4] if len(args) > 4 else kwargs.get("attention", "signed")
            if form not in ATTENTION_FORMS:
                raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {form!r}")
            cls = cls.forms[form]
        return super().__new__(cls)

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
        if attention not in ATTENTION_FORMS or not isinstance(self, self.forms[attention]):
            raise ValueError(f"{type(self).__name__} has no attention form {attention!r}")
        self.tokens = validate_tokens(tokens)
        self.dim = dim
        self.length = sum(self.tokens)
        self.partition = partition
        self.variant = variant
        self.attention_form = attention
        self.fused = fused
        self.attention_enabled = True
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
        below_diagonal = torch.tril(torch.ones(self.l2, self.l2, dtype=torch.bool), -1)
        self.register_buffer("mask", below_diagonal, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, tokens={self.tokens}, partition={self.partition!r}, "
            f"variant={self.variant}, attention={self.attention_form!r}, X1={self.l1}, X2={self.l2}"
        )

    @property
    @abstractmethod
    def temperature(self) -> Tensor:
        """The positive softmax temperature τ."""

    @property
    @abstractmethod
    def strength_value(self) -> Tensor:
        """How strongly the layer mixes: β of the signed form, α of the gated one, else ``c1``."""

    def route(self, direction: Literal["forward", "inverse"], x: Tensor) -> Route:
        """This layer's route for a call on ``x`` (:func:`~mango.flows.kernels.select_route`)."""
        return select_route(direction, signed=self.signed, fused=self.fused, tokens=self.l2, x=x)

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

    def _split(self, x: Tensor, reversed_order: bool = False) -> tuple[Tensor, Tensor]:
        """``(X1, X2)``, in reversed token order if asked (the kernels' causal order)."""
        if reversed_order:
            return x.index_select(1, self.idx1_reversed), x.index_select(1, self.idx2_reversed)
        return x.index_select(1, self.idx1), x.index_select(1, self.idx2)

    def _merge(self, y1: Tensor, y2: Tensor, reversed_order: bool = False) -> Tensor:
        """Put X1 and X2 tokens back in place: two scatters into one new tensor."""
        idx1, idx2 = (
            (self.idx1_reversed, self.idx2_reversed) if reversed_order else (self.idx1, self.idx2)
        )
        y = y1.new_empty(y1.shape[0], self.length, y1.shape[2])
        return y.index_copy_(1, idx1, y1).index_copy_(1, idx2, y2)

    @abstractmethod
    def matrix(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, P)`` (B, L2, L2) from the conditioning tokens ``x1``: the matrix and its
        softmax part (the subclass's formula)."""

    @abstractmethod
    def dense_forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``(Y2, log diag A)`` by the dense formula (the subclass's)."""

    @abstractmethod
    def dense_inverse(self, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
        """``(X2, log diag A)`` with ``A X2 = Y2`` by the dense formula (the subclass's)."""

    @abstractmethod
    def _fast_forward(self, x: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``(merge(X1, A X2), log diag A)`` on (mixed) tokens by a kernel ``route``."""

    @abstractmethod
    def _fast_inverse(self, y1: Tensor, y2: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``(X2, log diag A)`` by a kernel ``route``."""

    def attention_matrix(
        self, x: Tensor, with_probabilities: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The matrix ``A`` (B, L2, L2) this layer applies to ``X2`` for input tokens ``x``.

        With ``with_probabilities=True`` return ``(A, P)``: ``P`` is the softmax part, the map of
        which ``X2`` tokens each output token gathers, as chosen by ``X1``.
        """
        if self.mixing is not None:
            x = self.mixing(x)[0]
        a, p = self.matrix(x.index_select(1, self.idx1))
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

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.attention_enabled:
            return x, x.new_zeros(x.shape[0])
        route = self.route("forward", x)
        if self.mixing is not None:
            factors = self.mixing.factors(x.dtype)
            x = self.mixing.mix(x, factors)
        if route is Route.DENSE:
            x1, x2 = self._split(x)
            y2, log_diag = self.dense_forward(x1, x2)
            y = self._merge(x1, y2)
        else:
            y, log_diag = self._fast_forward(x, route)
        if self.mixing is not None:
            y = self.mixing.unmix(y, factors)
        return y, x.shape[2] * log_diag.sum(-1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.attention_enabled:
            return y, y.new_zeros(y.shape[0])
        if self.mixing is not None:
            factors = self.mixing.factors(y.dtype)
            y = self.mixing.mix(y, factors)
        y1, y2 = self._split(y)
        route = self.route("inverse", y)
        if route is Route.DENSE:
            x2, log_diag = self.dense_inverse(y1, y2)
        else:
            x2, log_diag = self._fast_inverse(y1, y2, route)
        x = self._merge(y1, x2)
        if self.mixing is not None:
            x = self.mixing.unmix(x, factors)
        return x, -y.shape[2] * log_diag.sum(-1)


def ica_layers(
    dim: int, tokens: tuple[int, ...], partition: str, **kwargs: Any
) -> list[InvertibleCrossAttention]:
    """One :class:`InvertibleCrossAttention` per variant of ``partition`` for this token layout."""
    count = num_variants(partition, len(validate_tokens(tokens)))
    return [
        InvertibleCrossAttention(dim, tokens, partition, v, **kwargs) for v in range(1, count + 1)
    ]
