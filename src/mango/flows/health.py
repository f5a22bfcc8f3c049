"""Attention health of a flow: how much its attention changes the tokens, and whether it inverts.

Two numbers say whether a trained MANGO flow fuses and is still exact:

.. math::

    \\text{effect}_\\ell = \\frac{\\|Y_2 - X_2\\|}{\\|X_2\\|} \\text{ per ICA layer } \\ell, \\qquad
    \\text{round trip} = \\frac{\\|f^{-1}(f(x)) - x\\|}{\\|x\\|},

both over a batch of real tokens (norms over every sample, token and channel). An effect near
zero means the layer is the identity: its attention does not carry weight.

Example:
    >>> from mango.flows import MangoFlow
    >>> flow = MangoFlow(dim=8, tokens=(4, 4), blocks=1).eval()
    >>> with torch.no_grad():  # as if trained: a fresh flow is the identity
    ...     _ = [p.add_(0.1 * torch.randn_like(p)) for p in flow.parameters()]
    >>> terms = health_terms(flow, torch.randn(2, 8, 8))
    >>> len(terms.layer_change), bool((terms.layer_change > 0).all()), terms.round_trip_error() < 1e-5
    (8, True, True)
    >>> with attention_disabled(flow):
    ...     float(health_terms(flow, torch.randn(2, 8, 8)).layer_change.sum())
    0.0
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mango.flows.cross_attention import InvertibleCrossAttention


@contextmanager
def attention_disabled(module: nn.Module) -> Iterator[int]:
    """Switch off every cross-token attention inside ``module`` (ICA layers and attention
    conditioners of couplings); yields how many were switched off and restores them on exit."""
    switches = [m for m in module.modules() if hasattr(m, "attention_enabled")]
    saved = [m.attention_enabled for m in switches]
    for m in switches:
        m.attention_enabled = False
    try:
        yield len(switches)
    finally:
        for m, state in zip(switches, saved, strict=True):
            m.attention_enabled = state


@dataclass
class HealthTerms:
    """Squared norms summed over a batch, so several batches add up exactly."""

    layer_change: Tensor  # (layers,) Σ ‖Y2 - X2‖² per ICA layer
    layer_norm: Tensor  # (layers,) Σ ‖X2‖² per ICA layer
    error: Tensor = field(default_factory=lambda: torch.zeros(()))  # Σ ‖f⁻¹(f(x)) - x‖²
    norm: Tensor = field(default_factory=lambda: torch.zeros(()))  # Σ ‖x‖²

    def __add__(self, other: HealthTerms) -> HealthTerms:
        return HealthTerms(
            self.layer_change + other.layer_change,
            self.layer_norm + other.layer_norm,
            self.error + other.error,
            self.norm + other.norm,
        )

    def layer_effects(self) -> list[float]:
        """``‖Y2 - X2‖ / ‖X2‖`` of every ICA layer, in flow order."""
        return (self.layer_change / self.layer_norm.clamp_min(1e-30)).sqrt().tolist()

    def attention_effect(self) -> float | None:
        """The mean effect over ICA layers (``None`` for a flow without ICA layers)."""
        effects = self.layer_effects()
        return sum(effects) / len(effects) if effects else None

    def round_trip_error(self) -> float:
        return float((self.error / self.norm.clamp_min(1e-30)).sqrt())


@torch.no_grad()
def health_terms(flow: nn.Module, x: Tensor) -> HealthTerms:
    """Health terms of ``flow`` (a :class:`~mango.flows.MangoFlow`) on tokens ``x`` (B, L, D).

    Runs the flow layer by layer (recording each ICA layer's effect on its own input), then the
    inverse of the result, in the flow's own dtype.
    """
    x = x.to(next(flow.parameters()).dtype)
    changes, norms = [], []
    h = x
    for block in flow.layers:
        for layer in block:
            out = layer(h)[0]
            if isinstance(layer, InvertibleCrossAttention):
                change, norm = layer.effect_terms(h, out)
                changes.append(change.sum())
                norms.append(norm.sum())
            h = out
    back = flow.inverse(h)[0]
    stack = lambda values: torch.stack(values).cpu() if values else torch.zeros(0)  # noqa: E731
    return HealthTerms(
        stack(changes),
        stack(norms),
        (back - x).square().sum().cpu(),
        x.square().sum().cpu(),
    )
