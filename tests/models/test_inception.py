"""FID Inception-v3: pytorch-fid key layout, features, and weight loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mango.errors import CheckpointError
from mango.models.encoders.inception import FIDInceptionV3, load_fid_inception


@pytest.fixture(scope="module")
def net() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_key_layout_matches_pytorch_fid(net: FIDInceptionV3) -> None:
    state = net.state_dict()
    # torchvision Inception3 names, aux_logits=False, 1008 classes (pytorch-fid's FID weights)
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    # 94 BasicConv2d layers x (weight + 5 bn tensors) + fc weight and bias
    assert len(state) == 94 * 6 + 2
    assert net.Mixed_5b.branch_pool.bn.eps == 0.001


def test_features_shape(net: FIDInceptionV3) -> None:
    with torch.no_grad():
        features = net(torch.rand(2, 3, 40, 56))
    assert features.shape == (2, 2048) and (features >= 0).all()  # pooled ReLU outputs
    assert features.std(0).sum() > 0


def test_load_round_trip_and_errors(net: FIDInceptionV3, tmp_path: Path) -> None:
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    good = tmp_path / "pt_inception.pth"
    torch.save(state, good)
    loaded = load_fid_inception(good)
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key

    with pytest.raises(CheckpointError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_fid_inception(garbage)
    for name, bad, message in (
        ("missing", {}, "missing key Conv2d_1a_3x3.conv.weight"),
        (
            "shape",
            {"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)},
            r"key Conv2d_1a_3x3.conv.weight has shape \(32, 3, 5, 5\), expected \(32, 3, 3, 3\)",
        ),
        ("extra", {"AuxLogits.fc.weight": torch.zeros(1)}, "unexpected key AuxLogits.fc.weight"),
        ("list", [1, 2], "expected a state dict, found list"),
    ):
        path = tmp_path / f"{name}.pth"
        torch.save(bad, path)
        with pytest.raises(CheckpointError, match=message) as error:
            load_fid_inception(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
