"""predict_logits: multi-scale and flip averaging of softmax probabilities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mango.tasks.rgbd.inference import predict_logits


def block_batch() -> tuple[dict, torch.Tensor]:
    """rgb one-hot of a 4x6 grid of 8x8 blocks of classes 0..2; the class map it encodes."""
    classes = (torch.arange(4)[:, None] + 2 * torch.arange(6)[None]) % 3
    class_map = classes.repeat_interleave(8, 0).repeat_interleave(8, 1)[None]  # (1, 32, 48)
    rgb = F.one_hot(class_map, 3).permute(0, 3, 1, 2).float()
    depth = class_map[:, None].float() / 2
    return {"rgb": rgb, "depth": depth, "mask": class_map, "name": ["x"]}, class_map


def identity_logits(batch: dict) -> torch.Tensor:
    return 10 * batch["rgb"]


def test_single_scale_is_log_softmax() -> None:
    batch, class_map = block_batch()
    out = predict_logits(identity_logits, batch, 3)
    assert out.shape == (1, 3, 32, 48) and out.dtype == torch.float32
    assert torch.allclose(out, (10 * batch["rgb"]).log_softmax(1), atol=1e-5)
    assert torch.equal(out.argmax(1), class_map)


def test_multi_scale_flip_recovers_the_class_map() -> None:
    batch, class_map = block_batch()
    out = predict_logits(identity_logits, batch, 3, scales=(0.5, 0.75, 1.0, 1.5), flip=True)
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 32, 48), atol=1e-5)
    # away from block borders (where resampling blends two classes) the prediction is exact
    rows, cols = torch.arange(32) % 8, torch.arange(48) % 8
    inner = ((rows >= 2) & (rows <= 5))[:, None] & ((cols >= 2) & (cols <= 5))[None]
    assert torch.equal(out.argmax(1)[0][inner], class_map[0][inner])


def test_views_are_resized_and_flipped() -> None:
    batch, _ = block_batch()
    seen = []

    def record(view: dict) -> torch.Tensor:
        seen.append(view)
        return torch.zeros(1, 3, 5, 7)  # any resolution is accepted

    out = predict_logits(record, batch, 3, scales=(0.5, 1.25), flip=True)
    assert [tuple(v["rgb"].shape[-2:]) for v in seen] == [(16, 24), (16, 24), (40, 60), (40, 60)]
    assert all(tuple(v["depth"].shape[-2:]) == tuple(v["rgb"].shape[-2:]) for v in seen)
    assert all("mask" not in v and v["name"] == ["x"] for v in seen)
    # depth is resampled nearest: no new values appear
    assert all(set(v["depth"].unique().tolist()) <= {0.0, 0.5, 1.0} for v in seen)
    # the second view of each scale is the mirror image of the first
    assert torch.equal(seen[1]["rgb"], seen[0]["rgb"].flip(-1))
    assert torch.equal(seen[3]["depth"], seen[2]["depth"].flip(-1))
    assert torch.allclose(out, torch.full((1, 3, 32, 48), 1 / 3).log())


def test_flip_averages_probabilities_of_both_views() -> None:
    # logits depend on the column only, so the flipped view disagrees with the plain one
    width = 6
    batch = {"rgb": torch.zeros(2, 3, 2, width), "depth": torch.zeros(2, 1, 2, width)}
    column = torch.arange(width, dtype=torch.float32)

    def by_column(view: dict) -> torch.Tensor:
        logits = torch.zeros(2, 2, 2, width)
        logits[:, 0] = column
        return logits

    out = predict_logits(by_column, batch, 2, flip=True)
    # plain view: p(class 0 at x) = sigmoid(x); flipped and flipped back: sigmoid(W - 1 - x)
    expected = 0.5 * (torch.sigmoid(column) + torch.sigmoid(width - 1 - column))
    assert torch.allclose(out.exp()[:, 0], expected.expand(2, 2, width), atol=1e-6)


def test_bad_logits_shape_and_scales() -> None:
    batch, _ = block_batch()
    with pytest.raises(ValueError, match=r"expected \(1, 4, h, w\)"):
        predict_logits(identity_logits, batch, 4)
    with pytest.raises(ValueError, match="positive"):
        predict_logits(identity_logits, batch, 3, scales=(0.0,))
    with pytest.raises(ValueError, match="at least one"):
        predict_logits(identity_logits, batch, 3, scales=())
