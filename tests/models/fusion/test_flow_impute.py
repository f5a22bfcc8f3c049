"""``FlowFusion.impute`` completes exactly the absent modalities of exactly the samples that lack
one, on a flow whose every layer acts."""

from __future__ import annotations

import torch

from mango.models.fusion import FlowFusion


def test_impute_changes_exactly_the_absent_tokens() -> None:
    torch.manual_seed(0)
    fusion = FlowFusion(4, [4, 4], blocks=1).double()
    fusion.flow.train()
    fusion.flow(torch.randn(16, 8, 4, dtype=torch.float64))  # ActNorm data init
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(0.3 * torch.randn_like(p))
    fusion.eval()
    tokens = [torch.randn(3, 4, 4, dtype=torch.float64) for _ in range(2)]
    present = torch.tensor([[True, False], [True, True], [False, True]])
    first, second = fusion.impute(tokens, present)
    assert torch.equal(first[:2], tokens[0][:2]) and torch.equal(second[1:], tokens[1][1:])
    assert (second[0] != tokens[1][0]).all(1).all()  # sample 0: every token of its absent 2nd
    assert (first[2] != tokens[0][2]).all(1).all()  # sample 2: every token of its absent 1st
