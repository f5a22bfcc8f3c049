"""The segmentation fusion model: fusion modes, stage choice, input checks."""

from __future__ import annotations

import pytest
import torch

from mango.errors import ConfigError
from mango.models.segmentation import SegmentationFusionModel

CHANNELS = {"rgb": 3, "depth": 1}


def _model(fusion="mango", modalities=("rgb", "depth"), **kwargs):
    torch.manual_seed(0)
    return SegmentationFusionModel(
        list(modalities),
        CHANNELS,
        5,
        (32, 32),
        encoder="conv-tiny",
        fusion=fusion,
        fuse_stages=kwargs.pop("fuse_stages", [2]),
        dim=8,
        flow={"blocks": 1},
        head_dim=16,
        **kwargs,
    )


def _batch():
    return {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32)}


@pytest.mark.parametrize(
    "fusion,modalities,has_flow",
    [
        ("mango", ("rgb", "depth"), True),
        ("concat", ("rgb", "depth"), False),
        ("single", ("depth",), False),
    ],
)
def test_modes_share_the_interface(fusion, modalities, has_flow):
    out = _model(fusion, modalities)(_batch())
    assert out.logits.shape == (2, 5, 32, 32)
    assert (out.bits_per_dim is not None) == has_flow


def test_flow_only_at_the_chosen_stages_and_parameters_split():
    model = _model(fuse_stages=[1, 2])
    assert [stage.mode for stage in model.stages] == ["concat", "mango", "mango", "concat"]
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}


def test_single_modality_never_reads_the_other():
    model = _model("single", ("rgb",)).eval()
    batch = _batch()
    a = model(batch).logits
    batch["depth"] = torch.full_like(batch["depth"], float("nan"))
    assert torch.equal(model(batch).logits, a)


def test_missing_modality_and_wrong_size_are_clear():
    model = _model()
    with pytest.raises(ValueError, match="missing modality 'depth'"):
        model({"rgb": torch.randn(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="differs from the model's image_size"):
        model({"rgb": torch.randn(1, 3, 48, 48), "depth": torch.randn(1, 1, 48, 48)})


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"fusion": "sum"}, "model.fusion"),
        ({"fusion": "single"}, "takes one modality"),
        ({"fuse_stages": [5]}, "model.fuse_stages"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _model(**kwargs)
