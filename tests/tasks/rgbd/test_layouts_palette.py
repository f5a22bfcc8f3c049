"""Layouts (splits, label shift, depth normalisation) and the colour palette."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mango.errors import ConfigError
from mango.tasks.rgbd.layouts import NYUDV2, SUNRGBD, get_layout
from mango.tasks.rgbd.palette import colorize, palette


def test_layouts() -> None:
    assert get_layout("nyudv2") is NYUDV2 and get_layout(SUNRGBD) is SUNRGBD
    assert NYUDV2.num_classes == 40 and NYUDV2.class_names[-1] == "otherprop"
    assert SUNRGBD.class_names == NYUDV2.class_names[:37] and SUNRGBD.class_names[-1] == "bag"
    assert [NYUDV2.list_file(s) for s in ("train", "val", "test")] == [
        "train.txt",
        "val.txt",
        "val.txt",
    ]
    assert [SUNRGBD.list_file(s) for s in ("train", "val", "test")] == [
        "train.txt",
        "test.txt",
        "test.txt",
    ]
    assert NYUDV2.expected_counts == {"train": 795, "val": 654}
    assert SUNRGBD.expected_counts == {"train": 5285, "test": 5050}
    with pytest.raises(ConfigError, match="unknown layout 'taskonomy'"):
        get_layout("taskonomy")
    with pytest.raises(ConfigError, match="no split 'dev'"):
        SUNRGBD.split_of("dev")


def test_label_maps() -> None:
    raw = np.arange(256, dtype=np.uint8)
    nyu = NYUDV2.map_labels(raw)
    assert nyu[:40].tolist() == list(range(40)) and nyu[255] == 255
    assert (nyu[40:255] == -1).all()
    sun = SUNRGBD.map_labels(raw)
    assert sun[0] == 255 and sun[1:38].tolist() == list(range(37)) and sun[255] == 255
    assert (sun[38:255] == -1).all()


def test_depth_normalisation() -> None:
    nyu = NYUDV2.depth
    raw = np.array([0, 5000, 12500, 50000, 65535], dtype=np.uint16)
    assert nyu.metres(raw).tolist() == pytest.approx([0, 1, 2.5, 10, 13.107])
    assert nyu(raw).tolist() == pytest.approx([0, 0.1, 0.25, 1, 1])
    # SUN stores millimetres rotated left by 3 bits, also beyond 8.192 m where bits wrap around
    mm = np.array([0, 1500, 8191, 9000, 12345], dtype=np.uint32)
    stored = (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)
    assert stored[3] == 6465  # 9000 << 3 = 72000 wraps: (72000 & 0xFFFF) | (9000 >> 13)
    assert SUNRGBD.depth.metres(stored).tolist() == pytest.approx([0, 1.5, 8.191, 9.0, 12.345])
    assert SUNRGBD.depth(stored).tolist() == pytest.approx([0, 0.15, 0.8191, 0.9, 1.0])
    recorded = json.loads(json.dumps(SUNRGBD.depth_config()))
    assert recorded == {
        "layout": "sunrgbd",
        "formula": "clip(rotr16(raw, rotate_bits) / units_per_metre / max_depth_m, 0, 1)",
        "units_per_metre": 1000.0,
        "max_depth_m": 10.0,
        "rotate_bits": 3,
    }
    assert NYUDV2.depth_config()["units_per_metre"] == 5000.0


def test_palette() -> None:
    colours = palette()
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert colours[255].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colours[:255]}) == 255  # distinct
    assert (colours[:255].sum(1) > 0).all()  # no class is black like ignore
    assert np.array_equal(palette(), colours)
    with pytest.raises(ValueError):
        colours[0, 0] = 1  # read-only


def test_colorize() -> None:
    mask = torch.tensor([[0, 1], [255, 39]])
    image = colorize(mask)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert image[1, 0].tolist() == [0, 0, 0]
    assert image[0, 1].tolist() == palette()[1].tolist() == [0, 128, 0]
    assert np.array_equal(colorize(mask.numpy()), image)
    with pytest.raises(ValueError, match="0..255"):
        colorize(np.array([[256]]))
    with pytest.raises(ValueError, match="label map"):
        colorize(np.zeros((1, 2, 3), dtype=np.uint8))
