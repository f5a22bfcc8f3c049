"""RGBDSegmentationDataset on the NYUDv2 and SUN RGB-D fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mango.errors import ConfigError, DataError
from mango.tasks.rgbd.data import RGBDSegmentationDataset
from mango.testing.rgbd import write_nyudv2_fixture, write_sunrgbd_fixture


def _raw(path: str | Path) -> np.ndarray:
    return np.array(Image.open(path))


def _list_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_nyudv2_items(nyu_root: Path) -> None:
    data = RGBDSegmentationDataset(nyu_root, "nyudv2", "train")
    lines = _list_lines(nyu_root / "train.txt")
    assert len(data) == len(lines) == 4
    seen_ignore = False
    for item, (rgb_rel, mask_rel, depth_rel) in zip(data, lines, strict=True):
        assert rgb_rel.startswith("rgb/") and mask_rel.startswith("masks/")
        assert depth_rel.startswith("depth/")
        name = Path(rgb_rel).stem
        assert item["name"] == name and len(name) == 6 and name.isdigit() and int(name) >= 1
        assert item["rgb_path"] == str(nyu_root / rgb_rel)
        rgb, depth, mask = item["rgb"], item["depth"], item["mask"]
        assert rgb.shape == (3, 48, 64) and rgb.dtype == torch.float32
        assert depth.shape == (1, 48, 64) and depth.dtype == torch.float32
        assert mask.shape == (48, 64) and mask.dtype == torch.int64
        # rgb = pixel / 255, channels first
        expected_rgb = _raw(nyu_root / rgb_rel).astype(np.float32) / 255
        np.testing.assert_allclose(rgb.permute(1, 2, 0).numpy(), expected_rgb, atol=1e-6)
        # depth = clip(raw / 5000 / 10, 0, 1)
        raw_depth = _raw(nyu_root / depth_rel)
        assert raw_depth.dtype == np.uint16
        np.testing.assert_allclose(depth[0].numpy(), np.clip(raw_depth / 50000, 0, 1), atol=1e-6)
        # NYU masks are used as they are: classes 0..39, 255 ignore
        raw_mask = _raw(nyu_root / mask_rel)
        np.testing.assert_array_equal(mask.numpy(), raw_mask)
        values = set(mask.unique().tolist())
        assert values <= set(range(40)) | {255}
        assert {0, 1} <= values and len(values - {255}) >= 4
        seen_ignore |= 255 in values
        # ignored pixels have missing depth; depth is in range elsewhere
        assert bool((depth[0][mask == 255] == 0).all())
        assert 0 < float(depth[0][mask != 255].min()) and float(depth.max()) <= 1
    assert seen_ignore


def test_nyudv2_test_split_is_val(nyu_root: Path) -> None:
    val = RGBDSegmentationDataset(nyu_root, "nyudv2", "val")
    test = RGBDSegmentationDataset(nyu_root, "nyudv2", "test")
    assert [e.name for e in val.entries] == [e.name for e in test.entries]
    assert len(test) == 3
    train_names = {e.name for e in RGBDSegmentationDataset(nyu_root, "nyudv2", "train").entries}
    assert not train_names & {e.name for e in test.entries}


def test_sunrgbd_shift_and_depth(sun_root: Path) -> None:
    data = RGBDSegmentationDataset(sun_root, "sunrgbd", "train")
    assert len(data) == 4
    assert [e.name for e in data.entries] == ["train_0", "train_1", "train_2", "train_3"]
    for index in range(len(data)):
        item = data[index]
        assert item["rgb_path"] == str(sun_root / "RGB" / f"train_{index}.jpg")
        raw_mask = _raw(sun_root / "labels" / f"train_{index}.png")
        assert raw_mask.dtype == np.uint8 and int(raw_mask.max()) <= 37
        assert (raw_mask == 0).any()  # the fixture has void pixels
        expected = np.where(raw_mask == 0, 255, raw_mask.astype(np.int64) - 1)
        np.testing.assert_array_equal(item["mask"].numpy(), expected)
        assert set(item["mask"].unique().tolist()) <= set(range(37)) | {255}
        raw_depth = _raw(sun_root / "Depth" / f"train_{index}.png").astype(np.int64)
        millimetres = (raw_depth >> 3) | ((raw_depth << 13) & 0xFFFF)
        np.testing.assert_allclose(
            item["depth"][0].numpy(), np.clip(millimetres / 1000 / 10, 0, 1), atol=1e-6
        )
        # the fixture puts the wall 3..5 m away: normalised 0.3..0.5 in the first row
        top = item["depth"][0, 0][item["mask"][0] == 0]
        assert bool(((top > 0.28) & (top < 0.52)).all())
        assert item["rgb"].shape == (3, 48, 64) and 0 <= float(item["rgb"].min())
    val = RGBDSegmentationDataset(sun_root, "sunrgbd", "val")
    assert [e.name for e in val.entries] == ["test_0", "test_1", "test_2"]


def test_max_items_and_transform(nyu_root: Path) -> None:
    def tag(sample: dict) -> dict:
        return {**sample, "tagged": True}

    data = RGBDSegmentationDataset(nyu_root, "nyudv2", "train", transform=tag, max_items=2)
    assert len(data) == 2 and data[1]["tagged"] is True
    with pytest.raises(DataError, match="max_items"):
        RGBDSegmentationDataset(nyu_root, "nyudv2", "train", max_items=0)


def test_bad_arguments(nyu_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no split 'dev'"):
        RGBDSegmentationDataset(nyu_root, "nyudv2", "dev")
    with pytest.raises(ConfigError, match="unknown layout"):
        RGBDSegmentationDataset(nyu_root, "nyu", "train")
    with pytest.raises(DataError, match="does not exist"):
        RGBDSegmentationDataset(tmp_path / "nowhere", "nyudv2", "train")


def test_fixtures_are_deterministic(tmp_path: Path) -> None:
    a = write_nyudv2_fixture(tmp_path / "a", n_train=1, n_test=1, size=(20, 24), seed=3)
    b = write_nyudv2_fixture(tmp_path / "b", n_train=1, n_test=1, size=(20, 24), seed=3)
    assert (a / "train.txt").read_text() == (b / "train.txt").read_text()
    name = (a / "train.txt").read_text().split("\t")[0]
    np.testing.assert_array_equal(_raw(a / name), _raw(b / name))
    c = write_sunrgbd_fixture(tmp_path / "c", n_train=2, n_test=1, size=(20, 24), seed=3)
    assert len((c / "train.txt").read_text().splitlines()) == 2
    assert RGBDSegmentationDataset(c, "sunrgbd", "test")[0]["mask"].shape == (20, 24)
