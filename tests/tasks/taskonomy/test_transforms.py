"""Train / eval transforms: one geometry for every modality, exact crop offsets and sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.tasks.taskonomy.data import TaskonomyPairs
from mango.tasks.taskonomy.transforms import EvalTransform, TrainTransform


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(4, 24),
    width=st.integers(4, 24),
    crop=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_crop_and_flip_without_resize_are_exact(
    height: int, width: int, crop: int, seed: int
) -> None:
    """With load_size = input size the output is the same window of every image."""
    base = torch.arange(height * width, dtype=torch.float32).reshape(1, height, width)
    sample = {"a": base.expand(3, -1, -1), "b": -2.0 * base, "target": base + 0.5, "name": "x"}
    crop_h, crop_w = max(1, height - crop), max(1, width - crop)
    out = TrainTransform((height, width), (crop_h, crop_w))(
        sample, torch.Generator().manual_seed(seed)
    )
    window = out["b"] / -2.0
    assert window.shape == (1, crop_h, crop_w) and out["name"] == "x"
    torch.testing.assert_close(out["a"], window.expand(3, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(out["target"], window + 0.5, rtol=0, atol=0)
    top, left = divmod(int(window.min()), width)  # the window's top-left value
    expected = base[:, top : top + crop_h, left : left + crop_w]
    assert torch.equal(window, expected) or torch.equal(window, expected.flip(-1))


def test_modalities_from_one_scene_stay_aligned(taskonomy_root: Path) -> None:
    """Every modality of a fixture sample gets the same window and flip as the rgb input."""
    data = TaskonomyPairs(taskonomy_root, ["rgb", "texture"], "normal", "train")
    transform = TrainTransform(40, 24)
    sample = data[0]
    reference = transform(sample, torch.Generator().manual_seed(3))
    # the same sample with rgb replaced by edge_texture: identical geometry means identical pixels
    swapped = dict(sample, rgb=sample["edge_texture"])
    again = transform(swapped, torch.Generator().manual_seed(3))
    torch.testing.assert_close(again["rgb"], reference["edge_texture"], rtol=0, atol=0)
    for seed in range(6):
        out = transform(sample, torch.Generator().manual_seed(seed))
        resized = EvalTransform(40)(sample)
        found = False
        for top in range(17):
            for left in range(17):
                window = resized["rgb"][:, top : top + 24, left : left + 24]
                for flip in (False, True):
                    candidate = window.flip(-1) if flip else window
                    if torch.equal(candidate, out["rgb"]):
                        tex = resized["edge_texture"][:, top : top + 24, left : left + 24]
                        tgt = resized["target"][:, top : top + 24, left : left + 24]
                        assert torch.equal(tex.flip(-1) if flip else tex, out["edge_texture"])
                        assert torch.equal(tgt.flip(-1) if flip else tgt, out["target"])
                        found = True
        assert found


def test_flip_happens_about_half_the_time() -> None:
    sample = {"x": torch.arange(4.0).reshape(1, 1, 4)}
    flips = sum(
        int(TrainTransform((1, 4), (1, 4))(sample, torch.Generator().manual_seed(s))["x"][0, 0, 0])
        == 3
        for s in range(200)
    )
    assert 70 < flips < 130
    no_flip = TrainTransform((1, 4), (1, 4), flip=False)
    assert all(torch.equal(no_flip(sample)["x"], sample["x"]) for _ in range(10))


def test_eval_transform_resizes_and_keeps_values() -> None:
    sample = {"rgb": torch.full((3, 20, 30), -0.25), "target": torch.full((3, 20, 30), 0.75)}
    out = EvalTransform((8, 12))(sample)
    assert out["rgb"].shape == (3, 8, 12) and out["target"].shape == (3, 8, 12)
    torch.testing.assert_close(out["rgb"], torch.full((3, 8, 12), -0.25))
    # 1x2 -> 1x4, half-pixel: output i samples input x = (i + 0.5) / 2 - 0.5, clamped to [0, 1]
    up = EvalTransform((1, 4))({"x": torch.tensor([[[0.0, 1.0]]])})
    torch.testing.assert_close(up["x"], torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        TrainTransform(16, 32)
    with pytest.raises(ValueError, match="positive"):
        EvalTransform(0)
