"""TaskonomyPairs: items, old vs new folder names, split files and bad-input errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mango.errors import ConfigError, DataError
from mango.tasks.taskonomy.data import TaskonomyPairs, sample_name


def test_item_layout_and_values(taskonomy_root: Path) -> None:
    data = TaskonomyPairs(taskonomy_root, ["rgb", "edge"], "depth", "train")
    assert len(data) == 4
    item = data[1]
    assert sorted(item) == ["edge_occlusion", "name", "rgb", "target"]
    assert item["name"] == "point_1_view_1"
    for key in ("rgb", "edge_occlusion", "target"):
        assert item[key].dtype == torch.float32 and item[key].shape == (3, 32, 32)
        assert -1.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
    raw_depth = np.asarray(
        Image.open(taskonomy_root / "depth_zbuffer" / "point_1_view_1_domain_depth_zbuffer.png")
    )
    expected = 2.0 * math.log1p(float(raw_depth[5, 7])) / 11.1 - 1.0
    assert float(item["target"][2, 5, 7]) == pytest.approx(expected, abs=1e-6)
    raw_rgb = np.asarray(Image.open(taskonomy_root / "rgb" / "point_1_view_1_domain_rgb.png"))
    assert float(item["rgb"][1, 3, 4]) == pytest.approx(2.0 * raw_rgb[3, 4, 1] / 255.0 - 1.0)


def test_old_and_new_folder_names_give_the_same_samples(
    taskonomy_root: Path, old_root: Path
) -> None:
    inputs, target = ["shade", "texture", "curvature", "mist"], "depth"
    new = TaskonomyPairs(taskonomy_root, inputs, target, "val")
    old = TaskonomyPairs(old_root, inputs, target, "val")
    assert old.paths(0)["edge_texture"].parent.name == "edge2d"
    assert old.paths(0)["edge_texture"].name == "point_4_view_1_domain_edge2d.png"
    for index in range(len(new)):
        a, b = new[index], old[index]
        assert a["name"] == b["name"]
        for key in (
            "reshading",
            "edge_texture",
            "principal_curvature",
            "depth_euclidean",
            "target",
        ):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_test_split_reads_the_validation_list(taskonomy_root: Path) -> None:
    val = TaskonomyPairs(taskonomy_root, ["rgb"], "normal", "val")
    test = TaskonomyPairs(taskonomy_root, ["rgb"], "normal", "test")
    assert val.templates == test.templates and len(test) == 3
    with pytest.raises(ConfigError, match="split"):
        TaskonomyPairs(taskonomy_root, ["rgb"], "normal", "dev")


def test_lines_with_concrete_paths_and_transform(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    (root / "val_domain.txt").write_text("rgb/point_4_view_1_domain_rgb.png\n\n")
    data = TaskonomyPairs(root, ["rgb"], "normal", "val", transform=lambda s: {**s, "seen": True})
    item = data[0]
    assert len(data) == 1 and item["name"] == "point_4_view_1" and item["seen"]
    assert sample_name("{domain}/point_9_view_3_domain_{domain}.png") == "point_9_view_3"


def test_bad_arguments(taskonomy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        TaskonomyPairs(tmp_path / "nowhere", ["rgb"], "normal", "val")
    with pytest.raises(ConfigError, match="listed twice"):
        TaskonomyPairs(taskonomy_root, ["rgb", "rgb"], "normal", "val")
    with pytest.raises(ConfigError, match="'sky'"):
        TaskonomyPairs(taskonomy_root, ["sky"], "normal", "val")


def _one_line(error: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_missing_and_empty_list(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    (root / "train_domain.txt").unlink()
    with pytest.raises(DataError) as error:
        TaskonomyPairs(root, ["rgb"], "normal", "train")
    _one_line(error, "train_domain.txt", "does not exist")
    (root / "val_domain.txt").write_text("\n  \n")
    with pytest.raises(DataError) as error:
        TaskonomyPairs(root, ["rgb"], "normal", "val")
    _one_line(error, "val_domain.txt", "empty")
    (root / "val_domain.txt").write_text("junk.png\n")
    with pytest.raises(DataError) as error:
        TaskonomyPairs(root, ["rgb"], "normal", "val")
    _one_line(error, "val_domain.txt", "line 1")


def test_missing_domain_folder(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    for file in (root / "normal").iterdir():
        file.unlink()
    (root / "normal").rmdir()
    with pytest.raises(DataError) as error:
        TaskonomyPairs(root, ["rgb"], "normal", "val")
    _one_line(error, "'normal'", "normal/")


def test_missing_undecodable_and_wrong_depth_files(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    data = TaskonomyPairs(root, ["rgb", "depth"], "normal", "val")
    paths = data.paths(0)
    paths["rgb"].unlink()
    with pytest.raises(DataError) as error:
        data[0]
    _one_line(error, str(paths["rgb"]), "does not exist")
    paths = data.paths(1)
    paths["normal"].write_bytes(b"not a png at all")
    with pytest.raises(DataError) as error:
        data[1]
    _one_line(error, str(paths["normal"]), "cannot be decoded")
    paths = data.paths(2)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(paths["depth_zbuffer"])
    with pytest.raises(DataError) as error:
        data[2]
    _one_line(error, str(paths["depth_zbuffer"]), "16-bit")


def test_size_mismatch_between_domains(fresh_copy: Callable[[], Path]) -> None:
    root = fresh_copy()
    data = TaskonomyPairs(root, ["rgb", "shade"], "normal", "train")
    path = data.paths(0)["reshading"]
    Image.fromarray(np.zeros((16, 32), dtype=np.uint8)).save(path)
    with pytest.raises(DataError) as error:
        data[0]
    _one_line(error, str(path), "size 32x16", "rgb 32x32")
