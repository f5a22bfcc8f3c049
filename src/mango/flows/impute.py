"""Completing missing tokens under a flow's exact joint density.

Given tokens ``x`` (B, L, D) whose entries at ``missing`` are unknown, the most likely completion
holds the observed entries ``x_o`` fixed and maximises the joint log-density over the missing ones:

.. math::

    \\hat x_m = \\arg\\max_{x_m} \\log p(x_o, x_m)
              = \\arg\\max_{x_m} \\log p(x_m \\mid x_o),

since ``log p(x_o)`` does not depend on ``x_m``. :func:`complete` runs ``steps`` Adam steps of
gradient ascent on ``log p`` (computed exactly by the flow) from a start. The same identity makes
conditional comparisons exact: for two completions ``a`` and ``b``,
``log p(a | x_o) - log p(b | x_o) = log p(x_o, a) - log p(x_o, b)``.

Example:
    >>> from mango.flows import MangoFlow
    >>> flow = MangoFlow(dim=4, tokens=(3, 3), blocks=1).eval()
    >>> with torch.no_grad():  # as if trained: a fresh flow is the identity
    ...     _ = [p.add_(0.1 * torch.randn_like(p)) for p in flow.parameters()]
    >>> x = torch.randn(2, 6, 4)
    >>> missing = torch.zeros(2, 6, dtype=torch.bool)
    >>> missing[:, 3:] = True                     # the second modality is absent
    >>> result = complete(flow, x, missing, steps=5)
    >>> bool(torch.equal(result.tokens[:, :3], x[:, :3]))  # observed tokens untouched
    True
    >>> bool((result.log_prob > result.start_log_prob).all())  # the density rose
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Completion:
    """Completed tokens and the joint log-density (nats, per sample) before and after."""

    tokens: Tensor  # (B, L, D): observed entries unchanged, missing ones completed
    log_prob: Tensor  # (B,) log p(x_o, x̂_m)
    start_log_prob: Tensor  # (B,) log p(x_o, start)


def complete(
    flow: nn.Module,
    x: Tensor,
    missing: Tensor,
    steps: int = 20,
    lr: float = 0.05,
    start: Tensor | None = None,
) -> Completion:
    """Most likely completion of ``x`` at ``missing`` under ``flow`` (see the module doc).

    Args:
        flow: any module with ``log_prob(x) -> (B,)`` (e.g. :class:`~mango.flows.MangoFlow`);
            its parameters are not changed and receive no gradient.
        x: tokens ``(B, L, D)``; the values at missing positions are ignored unless they are
            the start.
        missing: ``(B, L)`` or ``(B, L, D)`` boolean mask of the unknown entries.
        steps: Adam steps (0 returns the start).
        lr: Adam's step size, in units of the tokens.
        start: initial values ``(B, L, D)`` or broadcastable (default: ``x`` itself).

    The best iterate per sample is returned, so ``log_prob >= start_log_prob`` always holds.
    """
    if missing.dim() == 2:
        missing = missing.unsqueeze(-1)
    missing = missing.expand_as(x)
    observed = x.detach()
    begin = observed if start is None else torch.where(missing, start.expand_as(x), observed)
    values = begin.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([values], lr=lr)
    with torch.enable_grad():

        def log_prob() -> Tensor:
            return flow.log_prob(torch.where(missing, values, observed))

        current = log_prob()
        start_log_prob = current.detach()
        best, best_log_prob = values.detach().clone(), start_log_prob.clone()
        for _ in range(steps):
            (gradient,) = torch.autograd.grad(current.sum(), values)
            values.grad = -gradient  # ascent on log p
            optimizer.step()
            current = log_prob()
            better = current.detach() > best_log_prob
            best[better] = values.detach()[better]
            best_log_prob = torch.where(better, current.detach(), best_log_prob)
    tokens = torch.where(missing, best, observed)
    return Completion(tokens, best_log_prob, start_log_prob)
