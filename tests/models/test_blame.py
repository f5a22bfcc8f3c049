"""Which modality is broken: the flow's likelihood gain from re-imputing each modality, on a
flow trained by maximum likelihood on two dependent modalities (``b = a + 0.1·noise``).

The blame picks the modality ``m`` with the largest ``max log p(x_¬m, x_m) − log p(x)``, i.e.
the one whose removal leaves the most plausible rest. A modality replaced by a sensor's noise
(off its own distribution) is found; a corruption that keeps every modality plausible on its
own (a swap between samples of two symmetric modalities) could not be, by symmetry."""

from __future__ import annotations

import pytest
import torch

from mango.models.fusion import FlowFusion
from mango.models.scores import recording_gains

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int, generator: torch.Generator) -> list[torch.Tensor]:
    a = torch.randn(n, 2, 4, generator=generator)
    return [a, a + 0.1 * torch.randn(n, 2, 4, generator=generator)]


@pytest.fixture(scope="module")
def fusion() -> FlowFusion:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    fusion = FlowFusion(dim=4, tokens=[2, 2], blocks=2, coupling_hidden=16)  # trained below
    optimizer = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    for _ in range(120):
        bits = fusion(_pairs(64, generator)).bits_per_dim.mean()
        optimizer.zero_grad()
        bits.backward()
        optimizer.step()
    return fusion.eval()


def test_the_broken_modality_gains_most_from_being_reimputed(fusion: FlowFusion) -> None:
    generator = torch.Generator().manual_seed(2)
    a, b = _pairs(40, generator)
    noise = 3 * torch.randn(40, 2, 4, generator=generator)
    broken_b = torch.arange(40) < 20  # the first 20 lose b, the others a, to a sensor's noise
    mask = broken_b.reshape(-1, 1, 1)
    tokens = [torch.where(mask, a, noise), torch.where(mask, noise, b)]
    with torch.no_grad():
        gains = fusion.likelihood_gains(tokens)
    assert gains.shape == (40, 2) and bool((gains >= 0).all())
    blamed_b = gains.argmax(1) == 1
    assert (blamed_b == broken_b).float().mean() >= 0.9
    clean = fusion.likelihood_gains(_pairs(40, generator))
    assert clean.max(1).values.median() < gains.max(1).values.median() / 3


def test_gains_are_recorded_only_inside_the_block(fusion: FlowFusion) -> None:
    tokens = _pairs(3, torch.Generator().manual_seed(3))
    with torch.no_grad():
        fusion(tokens)
        assert fusion.gains is None
        with recording_gains(fusion) as recorded:
            fusion(tokens)
            fusion(tokens)
        fusion(tokens)
    assert len(recorded) == 1 and len(recorded[0]) == 2 and recorded[0][0].shape == (3, 2)
    assert fusion.gains is None
