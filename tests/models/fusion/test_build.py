"""build_fusion and the Fusion interface: names, the ±10 % budget rule, overrides, errors."""

from __future__ import annotations

import pytest
import torch

from mango.errors import ConfigError
from mango.models.fusion import (
    ALIGNED_FUSIONS,
    BASELINE_FUSIONS,
    TOKEN_FUSIONS,
    FlowFusion,
    Fusion,
    build_fusion,
)
from mango.models.fusion.budget import match_budget

LAYERED = [name for name in BASELINE_FUSIONS if name != "cmx"]
#: (dim, tokens, grid, flow): the demo's stage, the tensors smoke model, a wide small flow
SHAPES = [
    (32, [64, 64], (8, 8), {"blocks": 4, "coupling_hidden": 64}),
    (16, [6, 6], None, {"blocks": 2, "coupling_hidden": 16}),
    (64, [16, 16], (4, 4), {"blocks": 1, "coupling_hidden": 32}),
]


@pytest.mark.parametrize("name", LAYERED)
@pytest.mark.parametrize("dim, tokens, grid, flow", SHAPES)
def test_layered_baselines_are_within_ten_percent_of_the_flow(name, dim, tokens, grid, flow):
    target = FlowFusion(dim, tokens, **flow).parameter_count()  # structural: a size
    fusion = build_fusion(name, dim, tokens, grid, flow)
    assert fusion.name == name and isinstance(fusion, Fusion)
    assert abs(fusion.parameter_count() - target) <= 0.1 * target, (fusion.budget, target)
    assert fusion.budget.target == target
    assert fusion.budget.parameters == fusion.parameter_count()


def test_explicit_layers_override_the_budget():
    flow = {"blocks": 2, "coupling_hidden": 16}
    one = build_fusion("transformer", 16, [4, 4], flow=flow, settings={"layers": 1})
    assert len(one.layers) == 1 and one.budget is None
    wide = build_fusion("transformer", 16, [4, 4], flow=flow, settings={"ffn_ratio": 2.0})
    assert wide.budget.ffn_ratio == 2.0  # a fixed ratio: only the depth is chosen


def test_the_rule_solves_the_ratio_when_whole_layers_miss():
    # layers of 72·r parameters (Linear(8, 8r)): 700 is 2.4 layers at r = 4, so r is solved
    def factory(k: int, r: float) -> torch.nn.Module:
        return torch.nn.Sequential(*[torch.nn.Linear(8, round(8 * r)) for _ in range(k)])

    budget = match_budget(factory, dim=8, target=700, name="toy")
    assert (budget.layers, budget.ffn_ratio) == (2, 5.0)
    assert abs(budget.parameters - 700) <= 70


def test_a_budget_below_one_layer_is_one_line():
    with pytest.raises(ConfigError, match="model.fusion: transformer's smallest layer"):
        build_fusion(
            "transformer", 64, [2, 2], flow={"blocks": 1, "coupling_hidden": 1, "partitions": []}
        )


def test_names_errors_and_what_each_fusion_returns():
    assert set(TOKEN_FUSIONS) == {"mango", "concat", *BASELINE_FUSIONS}
    with pytest.raises(ConfigError, match="model.fusion: expected one of mango, concat"):
        build_fusion("nope", 8, [2, 2])
    for name in ALIGNED_FUSIONS:
        with pytest.raises(ConfigError, match=f"model.fusion: {name} needs .*equal token"):
            build_fusion(name, 16, [4, 6], flow={"blocks": 1})
    tokens = [torch.randn(2, 4, 16), torch.randn(2, 4, 16)]
    for name in TOKEN_FUSIONS:
        torch.manual_seed(0)
        fusion = build_fusion(name, 16, [4, 4], (2, 2), {"blocks": 1, "coupling_hidden": 16})
        out = fusion(tokens)
        assert [t.shape for t in out.tokens] == [t.shape for t in tokens]
        assert (out.bits_per_dim is not None) == fusion.has_density == (name == "mango")
        assert (out.aux_loss is not None) == (name == "tokenfusion")


def test_mapping_and_vector_inputs_and_wrong_counts():
    fusion = build_fusion("transformer", 8, [3, 1], settings={"layers": 1})
    out = fusion({"audio": torch.randn(2, 3, 8), "label": torch.randn(2, 8)})
    assert out.names == ("audio", "label") and out.as_dict()["label"].shape == (2, 8)
    with pytest.raises(ValueError, match=r"built for token counts \[3, 1\], got \[3, 2\]"):
        fusion([torch.randn(2, 3, 8), torch.randn(2, 2, 8)])
    with pytest.raises(ValueError, match="called with a list"):
        fusion([torch.randn(2, 3, 8), torch.randn(2, 1, 8)]).as_dict()
    with pytest.raises(ConfigError, match="mango needs 2\\+ modalities of 2\\+ tokens"):
        build_fusion("mango", 8, [3, 1])
