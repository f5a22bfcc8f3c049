"""``FlowFusion.impute`` completes exactly the absent modalities of exactly the samples that lack
one, from the flow's mode, on a flow whose every layer acts."""

from __future__ import annotations

import torch

from mango.models.fusion import FlowFusion
from mango.models.fusion.flow import ImputationSettings
from mango.testing.flows import perturb

PRESENT = torch.tensor([[True, False], [True, True], [False, True]])


def _acting_fusion() -> FlowFusion:
    torch.manual_seed(0)
    fusion = FlowFusion(4, [4, 4], blocks=1).double()  # perturbed below
    fusion.flow.train()
    fusion.flow(torch.randn(16, 8, 4, dtype=torch.float64))  # ActNorm data init
    perturb(fusion, scale=0.3)
    return fusion.eval()


def _tokens() -> list[torch.Tensor]:
    return [torch.randn(3, 4, 4, dtype=torch.float64) for _ in range(2)]


def test_impute_changes_exactly_the_absent_tokens() -> None:
    fusion, tokens = _acting_fusion(), _tokens()
    first, second = fusion.impute(tokens, PRESENT)
    assert torch.equal(first[:2], tokens[0][:2]) and torch.equal(second[1:], tokens[1][1:])
    assert (second[0] != tokens[1][0]).all(1).all()  # sample 0: every token of its absent 2nd
    assert (first[2] != tokens[0][2]).all(1).all()  # sample 2: every token of its absent 1st


def test_impute_searches_only_for_the_incomplete_samples() -> None:
    """The eval's ``impute_samples`` and time per sample count the samples that lack one."""
    fusion = _acting_fusion()
    fusion.impute(_tokens(), PRESENT)
    [record] = fusion.records
    assert record.samples == 2 and record.missing_dims.tolist() == [16, 16]


def test_the_prior_start_is_the_flow_mode() -> None:
    """``start = "prior"``: the search starts at ``f⁻¹(0)``, not at the zero token."""
    fusion = _acting_fusion()
    fusion.imputation = ImputationSettings(steps=0, start="prior")
    first, second = fusion.impute(_tokens(), PRESENT)
    mode = fusion.flow.inverse(torch.zeros(1, 8, 4, dtype=torch.float64))[0][0]
    assert mode.abs().min() > 1e-3  # the mode is not the zero token: the test can tell
    assert torch.allclose(second[0], mode[4:]) and torch.allclose(first[2], mode[:4])
