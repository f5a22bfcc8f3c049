"""The inverse without autograd: ``A`` in one reused buffer, or no ``A`` at all.

Under ``torch.no_grad`` (sampling, the rebuilds of memory-free backpropagation, evaluation) the
inverse runs these instead of the dense reference (routes ``Route.BLOCKWISE_SOLVE`` and
``Route.IN_PLACE_MATRIX`` of :func:`~mango.flows.kernels.select_route`); each is tested equal to
the dense inverse in float64 (``tests/flows/test_kernels.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Rows per block of :func:`signed_solve` (measured: docs/flows.md, "Speed and memory").
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
        >>> from mango.flows.kernels.signed import signed_mask, signed_probabilities
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


def coefficient_matrix_in_place(
    q: Tensor, k: Tensor, inverse_temperature: Tensor, mask: Tensor, log_c0: Tensor, log_c1: Tensor
) -> tuple[Tensor, Tensor]:
    """``(A, log diag A)`` of ``A = c0 I + c1 softmax(S)``, ``S = q kᵀ / τ`` masked where ``mask``.

    The dense reference's matrix, built in one ``(B, L2, L2)`` buffer that is reused for ``S``,
    ``P`` and ``A`` (no autograd).

    Example:
        >>> q, k = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
        >>> mask = torch.ones(5, 5, dtype=torch.bool).tril(-1)
        >>> half = torch.tensor(0.5).log()
        >>> a, log_diag = coefficient_matrix_in_place(q, k, torch.tensor(1.0), mask, half, half)
        >>> p = torch.softmax((q @ k.mT).masked_fill(mask, -math.inf), -1)
        >>> torch.allclose(a, 0.5 * torch.eye(5) + 0.5 * p)
        True
        >>> torch.allclose(log_diag, a.diagonal(dim1=-2, dim2=-1).log())
        True
    """
    a = torch.bmm(q, k.transpose(1, 2)).mul_(inverse_temperature)
    a.masked_fill_(mask, -math.inf)
    lse = torch.logsumexp(a, dim=-1)
    log_p_diag = a.diagonal(dim1=-2, dim2=-1) - lse
    a.sub_(lse.unsqueeze(-1)).exp_().mul_(log_c1.exp())
    a.diagonal(dim1=-2, dim2=-1).add_(log_c0.exp())
    return a, torch.logaddexp(log_c0, log_c1 + log_p_diag)
