"""Flows whose every layer acts, for tests of the flow's math.

A fresh ``MangoFlow(...).eval()`` is exactly the identity: ActNorm is not yet initialised, every
attention strength is 0 and the couplings are zero-initialised. A round trip, a sample or an
imputation on such a flow proves nothing, so flow-level tests build theirs with
:func:`acting_flow` and check with :func:`idle_layers` that no layer of it is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mango.flows import MangoFlow


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Move every floating parameter of ``module`` by ``scale · N(0, 1)``, seeded, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def acting_flow(
    dim: int = 4,
    tokens: tuple[int, ...] = (4, 4),
    blocks: int = 2,
    *,
    scale: float = 0.3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    **options: Any,
) -> MangoFlow:
    """A :class:`~mango.flows.MangoFlow` in eval mode whose ActNorms, attention and couplings act.

    The ActNorms are initialised from one batch of ``2·N(0, 1) + 1`` tokens (as training does on
    its first batch), then every parameter is moved by ``scale · N(0, 1)`` (:func:`perturb`).
    ``options`` go to :class:`~mango.flows.MangoFlow`. A signed ICA layer changes its input only
    when its X2 holds at least 3 tokens (docs/flows.md), so give every modality 4 tokens or more
    where each layer must act.

    Example:
        >>> flow = acting_flow(tokens=(4, 4))
        >>> idle_layers(flow, torch.randn(2, 8, 4, dtype=torch.float64))
        []
    """
    torch.manual_seed(seed)
    flow = MangoFlow(dim, tuple(tokens), blocks=blocks, **options).to(dtype).train()
    with torch.no_grad():
        flow(2 * torch.randn(16, sum(tokens), dim, dtype=dtype) + 1)
    perturb(flow, scale=scale, seed=seed)
    return flow.eval()


def idle_layers(flow: MangoFlow, x: Tensor, tolerance: float = 1e-6) -> list[str]:
    """Names of the layers of ``flow`` that leave their input unchanged on ``x``.

    The layers run in order (each on the previous one's output); a layer is idle when
    ``‖y − x‖ / ‖x‖ ≤ tolerance``. Names are ``"block.layer ClassName"``.
    """
    idle = []
    with torch.no_grad():
        for b, block in enumerate(flow):
            for i, layer in enumerate(block):
                y = layer(x)[0]
                if float((y - x).norm() / x.norm()) <= tolerance:
                    idle.append(f"{b}.{i} {type(layer).__name__}")
                x = y
    return idle
