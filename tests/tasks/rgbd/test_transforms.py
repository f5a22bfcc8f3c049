"""TrainTransform / EvalTransform keep rgb, depth and mask aligned; their math."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.tasks.rgbd.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
)

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]
OFFSET = 1000  # codes never collide with the fill values 0 (depth) and 255 (mask)
RAMP = 64.0  # rgb channel 0 = x / RAMP, channel 1 = y / RAMP


def coded_sample(height: int, width: int) -> dict:
    """depth == mask == OFFSET + y * width + x; rgb = (x, y) ramps; an extra key rides along."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    code = OFFSET + y * width + x
    rgb = torch.stack([x / RAMP, y / RAMP, torch.full_like(x, 0.5, dtype=torch.float32)])
    return {"rgb": rgb.float(), "depth": code[None].float(), "mask": code, "name": "n"}


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(4, 24),
    width=st.integers(4, 24),
    crop_h=st.integers(2, 32),
    crop_w=st.integers(2, 32),
    seed=st.integers(0, 2**31 - 1),
)
def test_train_transform_keeps_modalities_aligned(
    height: int, width: int, crop_h: int, crop_w: int, seed: int
) -> None:
    transform = TrainTransform((crop_h, crop_w), scale_range=(0.5, 2.0), color_jitter=0.0)
    out = transform(coded_sample(height, width), torch.Generator().manual_seed(seed))
    rgb = out["rgb"] * STD + MEAN
    depth, mask = out["depth"][0], out["mask"]
    assert out["rgb"].shape == (3, crop_h, crop_w) and mask.shape == (crop_h, crop_w)
    assert mask.dtype == torch.int64 and out["name"] == "n"

    padded = mask == 255
    # padding: mask 255, depth 0, rgb black; everywhere else depth and mask carry the same code
    assert bool((depth[padded] == 0).all())
    assert torch.allclose(rgb[:, padded], torch.zeros(3, int(padded.sum())), atol=1e-6)
    assert torch.equal(depth[~padded].long(), mask[~padded])
    assert bool((mask[~padded] >= OFFSET).all())

    # the rgb ramps at each pixel point at the same source pixel as the code (within half a pixel
    # of the nearest-exact sample, the difference between bilinear and nearest sampling)
    code = mask[~padded] - OFFSET
    source_y, source_x = code // width, code % width
    assert bool(((rgb[0][~padded] * RAMP - source_x).abs() <= 0.5 + 1e-4).all())
    assert bool(((rgb[1][~padded] * RAMP - source_y).abs() <= 0.5 + 1e-4).all())
    assert torch.allclose(rgb[2][~padded], torch.tensor(0.5), atol=1e-6)

    # mask values are never blended: every code is one of the input's codes
    assert bool((code < height * width).all())


def test_flip_and_crop_at_scale_one_are_exact() -> None:
    sample = coded_sample(6, 8)
    transform = TrainTransform((6, 8), scale_range=(1.0, 1.0), color_jitter=0.0)
    flips = 0
    for seed in range(20):
        out = transform(sample, torch.Generator().manual_seed(seed))
        if torch.equal(out["mask"], sample["mask"]):
            expected = sample
        else:
            flips += 1
            expected = {k: v.flip(-1) for k, v in sample.items() if k != "name"}
        assert torch.equal(out["mask"], expected["mask"])
        assert torch.equal(out["depth"], expected["depth"])
        assert torch.allclose(out["rgb"] * STD + MEAN, expected["rgb"], atol=1e-6)
    assert 3 <= flips <= 17  # probability 1/2 each
    no_flip = TrainTransform((6, 8), scale_range=(1.0, 1.0), flip=False, color_jitter=0.0)
    assert all(
        torch.equal(no_flip(sample, torch.Generator().manual_seed(s))["mask"], sample["mask"])
        for s in range(10)
    )


def test_scale_and_crop_ranges() -> None:
    sample = coded_sample(10, 10)
    sizes = set()
    for seed in range(30):
        # a crop larger than any scaled image shows the scaled size through the padding
        out = TrainTransform(40, scale_range=(0.5, 2.0), flip=False, color_jitter=0.0)(
            sample, torch.Generator().manual_seed(seed)
        )
        valid = out["mask"] != 255
        rows, cols = int(valid.any(1).sum()), int(valid.any(0).sum())
        assert 5 <= rows <= 20 and rows == cols
        assert bool(valid[:rows, :cols].all())  # padding is at the bottom/right only
        sizes.add(rows)
    assert len(sizes) >= 5


def test_seeded_generator_is_reproducible() -> None:
    sample = coded_sample(12, 16)
    transform = TrainTransform(8)
    a = transform(sample, torch.Generator().manual_seed(1))
    b = transform(sample, torch.Generator().manual_seed(1))
    c = transform(sample, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "mask"))
    assert not all(torch.equal(a[k], c[k]) for k in ("rgb", "depth", "mask"))


def test_color_jitter_touches_rgb_only() -> None:
    sample = coded_sample(6, 8)
    sample["rgb"] = torch.rand(3, 6, 8, generator=torch.Generator().manual_seed(0))
    transform = TrainTransform((6, 8), scale_range=(1.0, 1.0), flip=False, color_jitter=0.4)
    out = transform(sample, torch.Generator().manual_seed(0))
    assert torch.equal(out["depth"], sample["depth"]) and torch.equal(out["mask"], sample["mask"])
    rgb = out["rgb"] * STD + MEAN
    assert not torch.allclose(rgb, sample["rgb"], atol=1e-3)
    assert float(rgb.min()) >= -1e-6 and float(rgb.max()) <= 1 + 1e-6


def test_jitter_of_a_grey_image_is_a_brightness_change() -> None:
    # contrast and saturation leave a uniform grey image unchanged; brightness scales it
    transform = TrainTransform(4, color_jitter=0.2)
    for seed in range(10):
        out = transform.jitter(torch.full((3, 4, 4), 0.5), torch.Generator().manual_seed(seed))
        assert torch.allclose(out, out[0, 0, 0].expand_as(out), atol=1e-6)
        assert 0.4 - 1e-6 <= float(out[0, 0, 0]) <= 0.6 + 1e-6


def test_eval_transform() -> None:
    sample = {
        "rgb": torch.full((3, 2, 2), 0.5),
        "depth": torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]),
        "mask": torch.tensor([[1, 2], [3, 255]]),
    }
    kept = EvalTransform(None)(sample)
    assert torch.allclose(kept["rgb"], (0.5 - MEAN) / STD)
    assert torch.equal(kept["mask"], sample["mask"])
    out = EvalTransform(4)(sample)
    blocks = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 255], [3, 3, 255, 255]])
    assert torch.equal(out["mask"], blocks)
    assert torch.equal(out["depth"][0], torch.where(blocks == 255, 4, blocks).float())
    assert torch.allclose(out["rgb"], ((0.5 - MEAN) / STD).expand(3, 4, 4))
    wide = EvalTransform((2, 6), resize_mask=False)(sample)
    assert wide["rgb"].shape == (3, 2, 6) and wide["depth"].shape == (1, 2, 6)
    assert torch.equal(wide["mask"], sample["mask"])


def test_padding_stays_black_under_jitter() -> None:
    sample = coded_sample(6, 8)
    transform = TrainTransform((10, 12), scale_range=(1.0, 1.0), flip=False, color_jitter=0.5)
    for seed in range(5):
        out = transform(sample, torch.Generator().manual_seed(seed))
        rgb = out["rgb"] * STD + MEAN
        assert torch.allclose(rgb[:, 6:], torch.zeros(3, 4, 12), atol=1e-6)
        assert torch.allclose(rgb[:, :, 8:], torch.zeros(3, 10, 4), atol=1e-6)
        assert bool((out["mask"][6:] == 255).all()) and bool((out["mask"][:6, :8] >= OFFSET).all())
        assert not torch.allclose(rgb[:, :6, :8], sample["rgb"], atol=1e-3)  # jittered
