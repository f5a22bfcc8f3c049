"""Matching a baseline's size to the MANGO flow: the depth (and FFN ratio) rule.

A layered fusion of ``k`` layers at FFN ratio ``r`` has ``P(k, r) = P₀ + k·(a + b·r)``
parameters. The rule, with ``P*`` the flow's parameter count:

1. ``r = 4``, ``k = max(1, round((P* − P₀) / P_layer(4)))``;
2. stop if ``|P(k, 4) − P*| ≤ 10 % · P*``;
3. else keep ``k`` and solve ``r = ((P* − P₀)/k − a) / b``, with ``r·D`` rounded to a multiple
   of 8; if ``r > 8``, ``k ← k + 1`` and solve again.

``P₀``, ``a`` and ``b`` are **measured** by building the fusion at ``(1, 4)``, ``(2, 4)`` and
``(1, 8)``, so the rule holds for every fusion without a hand-written formula. The rule's
step 4 (a bottleneck width when the budget is below one layer) is not built: such a budget is a
one-line error that asks for ``fusion.layers`` or a smaller ``model.dim``.

Example:
    >>> from torch import nn
    >>> factory = lambda k, r: nn.Sequential(*[nn.Linear(8, round(8 * r)) for _ in range(k)])
    >>> match_budget(factory, dim=8, target=700, name="toy")
    Budget(target=700, layers=2, ffn_ratio=5.0, parameters=720)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mango.errors import ConfigError

#: the budget's tolerance, as a share of the target
TOLERANCE = 0.1
#: the rule's starting and largest FFN ratio
START_RATIO, MAX_RATIO = 4.0, 8.0


@dataclass(frozen=True)
class Budget:
    """The matched size: the target ``P*``, the chosen depth and FFN ratio, and the achieved ``P``."""

    target: int
    layers: int
    ffn_ratio: float
    parameters: int


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def match_budget(
    factory: Callable[[int, float], nn.Module],
    dim: int,
    target: int,
    name: str,
    ffn_ratio: float | None = None,
) -> Budget:
    """Depth ``k`` (and FFN ratio, unless ``ffn_ratio`` is fixed) that brings
    ``factory(k, r)`` within :data:`TOLERANCE` of ``target`` parameters (the module doc's rule).

    Raises:
        ConfigError: the target is below one layer (or, with a fixed ratio, out of reach).
    """
    start = START_RATIO if ffn_ratio is None else ffn_ratio
    one, two = _count(factory(1, start)), _count(factory(2, start))
    layer = two - one
    fixed = one - layer
    k = max(1, round((target - fixed) / layer))
    achieved = fixed + k * layer
    if abs(achieved - target) <= TOLERANCE * target or ffn_ratio is not None:
        return Budget(target, k, start, achieved)
    per_ratio = (_count(factory(1, 2 * start)) - one) / start
    base = layer - start * per_ratio
    while True:
        ratio = ((target - fixed) / k - base) / per_ratio
        ratio = max(8, round(ratio * dim / 8) * 8) / dim
        if ratio > MAX_RATIO:
            k += 1
            continue
        if ratio < 1 and k == 1:
            raise ConfigError(
                f"model.fusion: {name}'s smallest layer at dim {dim} ({fixed + layer:,} "
                f"parameters) is over the flow's budget ({target:,}); set fusion.layers "
                f"and fusion.ffn_ratio, or a smaller model.dim"
            )
        return Budget(target, k, ratio, _count(factory(k, ratio)))
