"""Learned invertible mixing of tokens: Glow's LU-parametrised 1x1 convolution over the token axis."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mango.flows.base import FlowLayer


class LUTokenMixing(FlowLayer):
    """Invertible linear map over tokens, ``y = W x`` with ``W = P L (U + diag(s))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular and
    ``s = sign * exp(log_s)``. The same ``W`` (``L x L``) mixes every channel:

    .. math::

        y_{i,d} = \\sum_j W_{ij} x_{j,d}, \\qquad
        x = (U + \\mathrm{diag}(s))^{-1} L^{-1} P^{\\top} y \\ \\text{(two triangular solves)},

        \\log|\\det J| = D \\sum_i \\log |s_i| .

    ``W = P`` at initialisation (``L = U = I`` structure, ``s = 1``); docs/design.md says why
    a permutation rather than a random orthogonal start.

    Args:
        length: the number of tokens ``L`` (``W`` is ``L x L``).
        generator: random generator of the fixed permutation ``P`` (default ``None``: torch's
            global one).

    Example:
        >>> mix = LUTokenMixing(length=5, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(2, 5, 3)
        >>> y, logdet = mix(x)
        >>> torch.allclose(mix.inverse(y)[0], x), logdet.tolist()
        (True, [0.0, 0.0])

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, NeurIPS
        | 2018), §3.2, applied over tokens instead of channels
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, length: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.length = length
        perm = torch.randperm(length, generator=generator)
        self.register_buffer("permutation", perm)
        self.register_buffer("sign", torch.ones(length))
        # L's strict lower part and U's strict upper part share one matrix (its diagonal is
        # unused: L has a unit diagonal, U's is s), halving parameters and optimizer state.
        self.lu = nn.Parameter(torch.zeros(length, length))
        self.log_s = nn.Parameter(torch.zeros(length))

    def factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Return ``(L - I, U + diag(s))``: the strictly lower part of ``L`` and the upper factor.

        ``L``'s unit diagonal is implicit (used as ``L v = v + (L - I) v`` and by unit-triangular
        solves), so each factor costs one masking op and no ``L x L`` identity.
        """
        lu = self.lu.to(dtype)
        lower = lu.tril(-1)
        diag = self.sign.to(dtype) * self.log_s.to(dtype).exp()
        upper = torch.diagonal_scatter(lu.triu(1), diag)
        return lower, upper

    def weight(
        self, dtype: torch.dtype = torch.float32, factors: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """The dense mixing matrix ``W = P L (U + diag(s))``, from :meth:`factors` if given."""
        lower, upper = self.factors(dtype) if factors is None else factors
        return (upper + lower @ upper).index_select(0, self._inverse_permutation())

    def inverse_columns(self, factors: tuple[Tensor, Tensor], columns: Tensor) -> Tensor:
        """Columns ``columns`` of ``W⁻¹ = (U + diag(s))⁻¹ L⁻¹ Pᵀ``, shape (L, len(columns)).

        ``Pᵀ e_c = e_{π⁻¹(c)}`` (``π`` the permutation), so two triangular solves with
        ``len(columns)`` right-hand sides give them; no inverse is formed.
        """
        lower, upper = factors
        eye = torch.eye(self.length, dtype=lower.dtype, device=lower.device)
        picked = eye.index_select(1, self._inverse_permutation().index_select(0, columns))
        z = torch.linalg.solve_triangular(lower, picked, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, z, upper=True)

    def _inverse_permutation(self) -> Tensor:
        return torch.argsort(self.permutation)

    def _logdet(self, x: Tensor, sign: int) -> Tensor:
        return (sign * x.shape[2] * self.log_s.to(x.dtype).sum()).expand(x.shape[0])

    def mix(self, x: Tensor, factors: tuple[Tensor, Tensor]) -> Tensor:
        """``W x`` for ``x`` (B, L, D) given :meth:`factors` (build them once for mix + unmix)."""
        lower, upper = factors
        batch, length, dim = x.shape
        # One (L, L) @ (L, B·D) product per factor instead of a broadcast batched product.
        u = upper @ x.transpose(0, 1).reshape(length, batch * dim)
        z = u + lower @ u
        # P z: row i of the output is row inverse_perm[i] of z, so P^T = gather by `permutation`.
        z = z.index_select(0, self._inverse_permutation())
        return z.reshape(length, batch, dim).transpose(0, 1)

    def unmix(self, y: Tensor, factors: tuple[Tensor, Tensor]) -> Tensor:
        """``W^{-1} y`` by two triangular solves with all B·D columns at once."""
        lower, upper = factors
        batch, length, dim = y.shape
        z = y.index_select(1, self.permutation).transpose(0, 1).reshape(length, batch * dim)
        z = torch.linalg.solve_triangular(lower, z, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, z, upper=True)
        return x.reshape(length, batch, dim).transpose(0, 1)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mix(x, self.factors(x.dtype)), self._logdet(x, 1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.unmix(y, self.factors(y.dtype)), self._logdet(y, -1)
