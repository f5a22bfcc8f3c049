"""check_taskonomy: counts, warnings and one error line per bad file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mango.tasks.taskonomy.check import check_taskonomy


def test_clean_folders_pass(taskonomy_root: Path, old_root: Path) -> None:
    for root in (taskonomy_root, old_root):
        report = check_taskonomy(root)
        assert report.ok, report.errors
        assert report.counts == {"train": 4, "val": 3}
        assert len(report.warnings) == 2 and "published train split has 1000" in report.warnings[0]
    report = check_taskonomy(old_root, ["shade", "depth"])
    assert report.ok and report.layout == "taskonomy"


def test_bad_files_are_reported_once_each(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    missing = root / "rgb" / "point_0_view_0_domain_rgb.png"
    missing.unlink()
    corrupt = root / "normal" / "point_1_view_1_domain_normal.png"
    corrupt.write_bytes(b"\x89PNG broken")
    eight_bit = root / "edge_texture" / "point_2_view_2_domain_edge_texture.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(eight_bit)
    small = root / "reshading" / "point_4_view_1_domain_reshading.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(small)
    report = check_taskonomy(root, workers=2)
    assert len(report.errors) == 4, report.errors
    joined = "\n".join(report.errors)
    assert f"{missing}: file does not exist" in joined
    assert f"{corrupt}: cannot be decoded" in joined
    assert f"{eight_bit}: edge_texture must be a single-channel 16-bit image" in joined
    assert f"{small}: size 8x8 differs from 32x32" in joined
    assert report.counts == {"train": 4, "val": 3}


def test_missing_lists_and_folders(fresh_copy: Callable[[], Path], tmp_path: Path) -> None:
    root = fresh_copy()
    (root / "val_domain.txt").unlink()
    report = check_taskonomy(root, ["rgb"])
    assert report.counts == {"train": 4}
    assert report.errors == [f"{root / 'val_domain.txt'}: list file does not exist"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no domain folder found" in check_taskonomy(empty).errors[0]
    assert check_taskonomy(tmp_path / "nowhere").errors[0].endswith("data folder does not exist")
    for file in (root / "normal").iterdir():
        file.unlink()
    (root / "normal").rmdir()
    report = check_taskonomy(root, ["rgb", "normal"])
    assert report.errors[-1] == f"{root}: no folder for domain 'normal' (looked for normal/)"
