"""The signed ICA form ``A = I + β N``: unit diagonal, zero row sums, volume preserving."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.cross_attention import InvertibleCrossAttention
from mango.flows.kernels import Route
from mango.flows.kernels.signed import (
    SignedWeights,
    signed_causal_attention,
    signed_layer,
    signed_mask,
    strength,
    temperature,
)
from mango.flows.kernels.solve import signed_solve


class SignedCrossAttention(InvertibleCrossAttention):
    """Signed invertible cross-attention: ``Y2 = X2 + β N X2``, log-det 0.

    With ``S = Q K^T / τ`` from ``X1`` (:class:`InvertibleCrossAttention`) and
    ``P^{±} = \\mathrm{softmax}(\\pm S)`` masked to ``j > i`` (the last row empty),

    .. math::

        N = \\tfrac12 (P^{+} - P^{-}), \\qquad A = I + β N, \\qquad
        Y_2 = A X_2, \\qquad X_2 = A^{-1} Y_2, \\qquad \\log|\\det J| = 0,

        β = β_{max} \\tanh(b), \\qquad τ = \\sqrt{d_k} \\, (1 + \\mathrm{softplus}(t)).

    ``N`` is strictly upper-triangular with zero row sums (``A 1 = 1``: the layer never scales
    the tokens) and ``\\|N\\|_\\infty \\le 1``, so ``\\|A^{-1}\\|_\\infty \\le 1/(1-β)``. The
    strength is a linear gate, ``b = 0`` at initialisation (the identity); ``t = -4`` starts the
    temperature at about ``√d_k``, its floor. Why this is the default: docs/flows.md.

    Args:
        dim, tokens, partition, variant, key_dim, fused: as :class:`InvertibleCrossAttention`.
        attention: ``"signed"``.
        gate_init: unused (the gated form's).
        strength_bound: ``β_max``, in ``(0, 1)``.

    References:
        Truong et al., "MANGO" (arXiv 2508.10133) for the layer; the signed form is this
        project's (docs/flows.md).

    Example:
        >>> layer = SignedCrossAttention(dim=4, tokens=(5, 3), partition="imca", variant=2)
        >>> with torch.no_grad():
        ...     _ = layer.strength.fill_(1.0)
        >>> x = torch.randn(2, 8, 4)
        >>> y, logdet = layer(x)
        >>> a = layer.attention_matrix(x)
        >>> torch.allclose(a.sum(-1), torch.ones(2, 4)), logdet.tolist()
        (True, [0.0, 0.0])
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-6)
        True
    """

    signed = True
    gate = None

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
        super().__init__(dim, tokens, partition, variant, attention, key_dim, gate_init, fused)
        if not 0 < strength_bound < 1:
            raise ValueError(f"strength_bound must be in (0, 1), got {strength_bound}")
        self.strength_bound = strength_bound
        self.temperature_offset = nn.Parameter(torch.tensor(-4.0))
        self.strength = nn.Parameter(torch.tensor(0.0))
        # the strictly upper mask, for rows 0..L2-2 (the last row has no j > i)
        on_or_below = torch.tril(torch.ones(self.l2 - 1, self.l2, dtype=torch.bool))
        self.register_buffer("strict_mask", on_or_below, persistent=False)
        self.register_buffer("signed_mask", signed_mask(self.l2), persistent=False)
        # the interpolation of X1 to L2 rows as a (L2, L1) matrix, for the one-node kernel
        # (float64, cast at use, so that a float64 layer interpolates exactly)
        interp = None
        if self.l1 != self.l2:
            eye = torch.eye(self.l1, dtype=torch.float64)[None]
            interp = F.interpolate(eye, size=self.l2, mode="linear", align_corners=True)[0].T
        self.register_buffer("conditioning_map", interp, persistent=False)

    @property
    def temperature(self) -> Tensor:
        """``τ = √d_k (1 + softplus(t))``."""
        return temperature(self.temperature_offset, self.key_dim)

    @property
    def strength_value(self) -> Tensor:
        """``β = β_max tanh(b)``."""
        return strength(self.strength, self.strength_bound)

    def _mixing(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, P+)``, each (B, L2, L2) and zero in its last row."""
        q, k = self._queries_keys(x1)
        s = (q @ k.transpose(1, 2))[:, :-1] / self.temperature.to(x1.dtype)
        positive = torch.softmax(s.masked_fill(self.strict_mask, -math.inf), dim=-1)
        negative = torch.softmax((-s).masked_fill(self.strict_mask, -math.inf), dim=-1)
        last_row = s.new_zeros(s.shape[0], 1, s.shape[2])
        return (
            torch.cat([0.5 * (positive - negative), last_row], 1),
            torch.cat([positive, last_row], 1),
        )

    def matrix(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, P+)`` with ``A = I + β N``."""
        n, positive = self._mixing(x1)
        eye = torch.eye(self.l2, dtype=x1.dtype, device=x1.device)
        return eye + self.strength_value.to(x1.dtype) * n, positive

    def dense_forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``Y2 = X2 + β N X2``; ``log A_ii = 0``."""
        y2 = x2 + self.strength_value.to(x2.dtype) * (self._mixing(x1)[0] @ x2)
        return y2, x2.new_zeros(x2.shape[0], self.l2)

    def dense_inverse(self, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
        """``X2`` from ``A X2 = Y2``: ``A`` from ``Y1 = X1``, one unit-triangular solve."""
        a = self.matrix(y1)[0]
        x2 = torch.linalg.solve_triangular(a, y2, upper=True, unitriangular=True)
        return x2, y2.new_zeros(y2.shape[0], self.l2)

    def kernel_weights(self, dtype: torch.dtype) -> SignedWeights:
        """What the one-node kernel (:func:`~mango.flows.kernels.signed.signed_layer`) reads."""
        mixing = columns = None
        if self.mixing is not None:
            factors = self.mixing.factors(dtype)
            mixing = self.mixing.weight(factors=factors)
            columns = self.mixing.inverse_columns(factors, self.idx2)
        interpolation = self.conditioning_map
        return SignedWeights(
            query=self.query.weight,
            key=self.key.weight,
            query_norm_weight=self.norm_q.weight,
            query_norm_bias=self.norm_q.bias,
            key_norm_weight=self.norm_k.weight,
            temperature_offset=self.temperature_offset,
            strength_offset=self.strength,
            strength_bound=self.strength_bound,
            eps=self.norm_q.eps,
            idx1=self.idx1,
            idx2=self.idx2,
            mask=self.signed_mask,
            interpolation=None if interpolation is None else interpolation.to(dtype),
            mixing=mixing,
            unmixing_columns=columns,
        )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.attention_enabled and self.route("forward", x) is Route.SIGNED_ONE_NODE:
            return signed_layer(x, self.kernel_weights(x.dtype)), x.new_zeros(x.shape[0])
        return super()._forward(x)

    def _fast_forward(self, x: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``SIGNED_CAUSAL``: two attention heads in reversed token order, ``N`` never formed."""
        x1, x2 = self._split(x, reversed_order=True)
        q, k = self._queries_keys(x1, scale=1.0 / self.temperature.to(x.dtype))
        beta = self.strength_value.to(x.dtype)
        y = signed_causal_attention(x, x2, q, k, beta, self.idx2_reversed)
        return y, x.new_zeros(x.shape[0], self.l2)

    def _fast_inverse(self, y1: Tensor, y2: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``BLOCKWISE_SOLVE``: back substitution by blocks of rows, ``A`` never formed."""
        q, k = self._queries_keys(y1, scale=1.0 / self.temperature.to(y1.dtype))
        x2 = signed_solve(q, k, y2, self.strength_value.to(y1.dtype))
        return x2, y2.new_zeros(y2.shape[0], self.l2)


InvertibleCrossAttention.forms["signed"] = SignedCrossAttention
