"""The ``A = c0 I + c1 P`` family of ICA forms: gated, softmax, half and identity_plus."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.cross_attention import InvertibleCrossAttention
from mango.flows.kernels import Route
from mango.flows.kernels.lse import coefficient_attention
from mango.flows.kernels.solve import coefficient_matrix_in_place

#: ``(c0, c1)`` of the forms with fixed coefficients ("gated" learns them).
COEFFICIENTS = {"softmax": (0.0, 1.0), "half": (0.5, 0.5), "identity_plus": (1.0, 1.0)}


class SoftmaxCrossAttention(InvertibleCrossAttention):
    """Invertible cross-attention ``Y2 = (c0 I + c1 P) X2`` with ``P`` a masked softmax.

    With ``S = Q K^T / τ`` from ``X1`` (:class:`InvertibleCrossAttention`),

    .. math::

        P = \\mathrm{softmax}(S \\text{ masked to } j \\ge i), \\qquad A = c_0 I + c_1 P,
        \\qquad Y_2 = A X_2, \\qquad X_2 = A^{-1} Y_2,

        \\log|\\det J| = D \\sum_{i=1}^{L_2} \\log A_{ii} = D \\sum_i \\log(c_0 + c_1 P_{ii}).

    The coefficients are settings of one formula: ``"gated"`` ``c0 = 1 - α, c1 = α`` with
    ``α = sigmoid(g)`` learned from ``g = gate_init``; ``"softmax"`` ``(0, 1)`` (the paper's);
    ``"half"`` ``(½, ½)``; ``"identity_plus"`` ``(1, 1)`` (the official code's). The temperature
    ``τ = exp(t)`` is clamped to ``[1e-2, 1e4]``, ``t`` starting at ``½ log d_k``.

    Args:
        dim, tokens, partition, variant, key_dim, fused: as :class:`InvertibleCrossAttention`.
        attention: ``"gated"``, ``"softmax"``, ``"half"`` or ``"identity_plus"``.
        gate_init: initial ``g`` of the gated form.
        strength_bound: unused (the signed form's).

    References:
        Truong et al., "MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion
        Learning", NeurIPS 2025 (arXiv 2508.10133).

    Example:
        >>> layer = SoftmaxCrossAttention(4, (3, 5), "mmca", 1, attention="half")
        >>> x = torch.randn(2, 8, 4)
        >>> y, logdet = layer(x)
        >>> a = layer.attention_matrix(x)
        >>> torch.allclose(logdet, 4 * a.diagonal(dim1=1, dim2=2).log().sum(-1))
        True
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    signed = False

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
        strength_bound: float = 0.5,
    ) -> None:
        super().__init__(dim, tokens, partition, variant, attention, key_dim, gate_init, fused)
        self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(self.key_dim)))
        self.gate = nn.Parameter(torch.tensor(float(gate_init))) if attention == "gated" else None

    @property
    def temperature(self) -> Tensor:
        """``τ = exp(t)``, clamped to ``[1e-2, 1e4]``."""
        return self.log_temperature.clamp(math.log(1e-2), math.log(1e4)).exp()

    @property
    def strength_value(self) -> Tensor:
        """``c1`` (``α`` of the gated form)."""
        return self.log_coefficients()[1].exp()

    def log_coefficients(self) -> tuple[Tensor, Tensor]:
        """``(log c0, log c1)`` of ``A = c0 I + c1 P`` (``log c0`` may be ``-inf``)."""
        device = self.query.weight.device
        if self.gate is not None:
            return F.logsigmoid(-self.gate), F.logsigmoid(self.gate)
        c0, c1 = COEFFICIENTS[self.attention_form]
        log = lambda c: torch.tensor(math.log(c) if c > 0 else -math.inf, device=device)  # noqa: E731
        return log(c0), log(c1)

    def scores(self, x1: Tensor) -> Tensor:
        """Masked attention logits ``S`` (B, L2, L2) from the conditioning tokens ``x1``."""
        q, k = self._queries_keys(x1)
        s = q @ k.transpose(1, 2) / self.temperature.to(x1.dtype)
        return s.masked_fill(self.mask, -math.inf)

    def _attention(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(A, log diag A, P)``: (B, L2, L2), (B, L2), (B, L2, L2)."""
        log_p = torch.log_softmax(self.scores(x1), dim=-1)
        log_c0, log_c1 = (c.to(x1.dtype) for c in self.log_coefficients())
        eye = torch.eye(self.l2, dtype=x1.dtype, device=x1.device)
        p = log_p.exp()
        a = log_c0.exp() * eye + log_c1.exp() * p
        log_diag = torch.logaddexp(log_c0, log_c1 + log_p.diagonal(dim1=-2, dim2=-1))
        return a, log_diag, p

    def matrix(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, P)``."""
        a, _, p = self._attention(x1)
        return a, p

    def dense_forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``Y2 = A X2`` and ``log A_ii = log(c0 + c1 P_ii)``."""
        a, log_diag, _ = self._attention(x1)
        return a @ x2, log_diag

    def dense_inverse(self, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
        """``X2`` from ``A X2 = Y2``: ``A`` from ``Y1 = X1``, one triangular solve."""
        a, log_diag, _ = self._attention(y1)
        return torch.linalg.solve_triangular(a, y2, upper=True), log_diag

    def _fast_forward(self, x: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``LSE_ATTENTION``: one fused kernel in reversed token order, ``A`` never formed."""
        x1, x2 = self._split(x, reversed_order=True)
        q, k = self._queries_keys(x1, scale=1.0 / self.temperature.to(x1.dtype))
        log_c0, log_c1 = (c.to(x1.dtype) for c in self.log_coefficients())
        y2, log_diag = coefficient_attention(q, k, x2, log_c0, log_c1, gated=self.gate is not None)
        return self._merge(x1, y2, reversed_order=True), log_diag

    def _fast_inverse(self, y1: Tensor, y2: Tensor, route: Route) -> tuple[Tensor, Tensor]:
        """``IN_PLACE_MATRIX``: the dense ``A`` in one reused buffer, one triangular solve."""
        q, k = self._queries_keys(y1)
        log_c0, log_c1 = (c.to(y1.dtype) for c in self.log_coefficients())
        inverse_temperature = 1.0 / self.temperature.to(y1.dtype)
        a, log_diag = coefficient_matrix_in_place(
            q, k, inverse_temperature, self.mask, log_c0, log_c1
        )
        return torch.linalg.solve_triangular(a, y2, upper=True), log_diag


InvertibleCrossAttention.forms.update(
    dict.fromkeys(("gated", *COEFFICIENTS), SoftmaxCrossAttention)
)
