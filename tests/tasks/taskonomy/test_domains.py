"""Domain names, folder resolution and per-domain decoding against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mango.errors import ConfigError, DataError
from mango.tasks.taskonomy.domains import (
    DOMAINS,
    OLD_NAMES,
    canonical_domain,
    decode,
    folder_names,
    resolve_domain,
)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("shade", "reshading"),
        ("texture", "edge_texture"),
        ("edge", "edge_occlusion"),
        ("depth", "depth_zbuffer"),
        ("reshade", "reshading"),
        ("edge2d", "edge_texture"),
        ("mist", "depth_euclidean"),
        ("curvature", "principal_curvature"),
        ("rgb", "rgb"),
        ("segment25d", "segment_unsup25d"),
        ("normal", "normal"),
    ],
)
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_domain(name) == canonical


def test_every_domain_has_an_encoding_and_unknown_names_fail() -> None:
    assert len(DOMAINS) == 10 and all(canonical_domain(d) == d for d in DOMAINS)
    assert folder_names("shade") == ("reshading", "reshade")
    assert folder_names("rgb") == ("rgb",)
    with pytest.raises(ConfigError, match="'colour'"):
        canonical_domain("colour")


def test_resolve_prefers_new_names_then_old(tmp_path: Path) -> None:
    (tmp_path / "reshade").mkdir()
    assert resolve_domain(tmp_path, "shade") == "reshade"
    (tmp_path / "reshading").mkdir()
    assert resolve_domain(tmp_path, "reshade") == "reshading"
    (tmp_path / "edge2d").mkdir()
    assert resolve_domain(tmp_path, "edge_texture") == "edge2d"
    with pytest.raises(DataError, match=r"depth_zbuffer.*depth_zbuffer/ or depth/") as info:
        resolve_domain(tmp_path, "depth")
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_eight_bit_rgb_and_grey() -> None:
    rgb = np.array([[[0, 51, 255], [255, 102, 0]]], dtype=np.uint8)  # (1, 2, 3)
    out = decode("rgb", rgb)
    assert out.dtype == torch.float32 and out.shape == (3, 1, 2)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.2, 1.0]))
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([1.0, 0.4, 0.0]))
    grey = decode("reshading", np.array([[51, 204]], dtype=np.uint8))
    torch.testing.assert_close(grey, torch.tensor([0.2, 0.8]).expand(3, 1, 2))
    rgba = np.dstack([rgb, np.full((1, 2), 7, dtype=np.uint8)])
    torch.testing.assert_close(decode("normal", rgba), out)


def test_sixteen_bit_depth_is_log_scaled() -> None:
    raw = np.array([[0, 511, 65535]], dtype=np.uint16)
    expected = torch.tensor([0.0, math.log(512) / 11.1, math.log(65536) / 11.1])
    for name in ("depth_zbuffer", "depth_euclidean", "mist"):
        out = decode(name, raw)
        assert out.shape == (3, 1, 3)
        torch.testing.assert_close(out[1, 0], expected)  # grey tiled: every channel equal
        torch.testing.assert_close(out[0], out[2])


def test_sixteen_bit_edges_are_linear_and_clamped() -> None:
    texture = decode("edge_texture", np.array([[0, 1000, 11355, 30000]], dtype=np.uint16))
    torch.testing.assert_close(texture[0, 0], torch.tensor([0.0, 1000 / 11355, 1.0, 1.0]))
    occlusion = decode("edge", np.array([[5792, 11584, 40000]], dtype=np.uint16))
    torch.testing.assert_close(occlusion[2, 0], torch.tensor([0.5, 1.0, 1.0]))


def test_old_names_table_is_one_to_one() -> None:
    assert len(set(OLD_NAMES.values())) == len(OLD_NAMES)
    assert all(canonical_domain(old) == new for new, old in OLD_NAMES.items())
