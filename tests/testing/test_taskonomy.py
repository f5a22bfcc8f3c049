"""mango.testing.taskonomy writes the documented encodings and geometrically consistent domains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mango.tasks.taskonomy.domains import DOMAINS, ENCODINGS
from mango.testing.taskonomy import write_taskonomy_fixture


@pytest.fixture(scope="module")
def taskonomy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All ten domains under their canonical names (4 train, 3 val, 32 x 32)."""
    return write_taskonomy_fixture(tmp_path_factory.mktemp("taskonomy"))


def _raw(root: Path, domain: str, name: str = "point_0_view_0") -> np.ndarray:
    return np.asarray(Image.open(root / domain / f"{name}_domain_{domain}.png"))


def test_encodings(taskonomy_root: Path) -> None:
    for domain in DOMAINS:
        with Image.open(taskonomy_root / domain / f"point_3_view_0_domain_{domain}.png") as image:
            if ENCODINGS[domain].bits == 16:
                assert image.mode == "I;16", domain
            else:
                assert image.mode in ("L", "RGB"), domain
            assert image.size == (32, 32)
    lines = (taskonomy_root / "train_domain.txt").read_text().splitlines()
    assert lines[0] == "{domain}/point_0_view_0_domain_{domain}.png" and len(lines) == 4


def test_domains_come_from_one_scene(taskonomy_root: Path) -> None:
    for name in ("point_0_view_0", "point_5_view_2"):
        zbuffer = _raw(taskonomy_root, "depth_zbuffer", name).astype(float)
        euclid = _raw(taskonomy_root, "depth_euclidean", name).astype(float)
        assert (euclid >= zbuffer).all() and (euclid.max() > zbuffer.max())
        # reshading = clip(n . l) * 0.8 + 0.2 with n the stored normal, up to 8-bit rounding
        normal = _raw(taskonomy_root, "normal", name).astype(float) / 127.5 - 1.0
        light = np.array([0.4, -0.5, 0.77]) / np.linalg.norm([0.4, -0.5, 0.77])
        shading = np.clip(normal @ light, 0, 1) * 0.8 + 0.2
        reshading = _raw(taskonomy_root, "reshading", name) / 255.0
        assert np.abs(shading - reshading).max() < 0.03
        # occlusion edges sit where the depth jumps
        gy, gx = np.gradient(zbuffer / 512.0)
        jumps = np.hypot(gx, gy) > 0.5
        edges = _raw(taskonomy_root, "edge_occlusion", name)
        assert jumps.any() and (edges[jumps] > 5000).all() and (edges[~jumps] < 6000).all()
