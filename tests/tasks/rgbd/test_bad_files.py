"""Every kind of bad file is caught by the reader AND by check_segmentation, naming the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mango.errors import DataError
from mango.tasks.rgbd.check import check_segmentation
from mango.tasks.rgbd.data import RGBDSegmentationDataset


def _first(root: Path, column: int) -> Path:
    """The file in ``column`` (0 rgb, 1 mask, 2 depth) of the first train line."""
    return root / (root / "train.txt").read_text().splitlines()[0].split("\t")[column]


def truncated_png(root: Path) -> tuple[Path, str]:
    path = _first(root, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def garbage_rgb(root: Path) -> tuple[Path, str]:
    path = _first(root, 0)
    path.write_bytes(b"this is not an image at all")
    return path, "cannot be decoded"


def missing_depth(root: Path) -> tuple[Path, str]:
    path = _first(root, 2)
    path.unlink()
    return path, "does not exist"


def size_mismatch(root: Path) -> tuple[Path, str]:
    path = _first(root, 1)
    Image.open(path).resize((32, 24), Image.Resampling.NEAREST).save(path)
    return path, "size 32x24 differs from rgb 64x48"


def depth_8bit(root: Path) -> tuple[Path, str]:
    path = _first(root, 2)
    Image.fromarray((np.array(Image.open(path)) // 256).astype(np.uint8)).save(path)
    return path, "depth is not a single-channel 16-bit image (PIL mode L)"


def mask_rgb(root: Path) -> tuple[Path, str]:
    path = _first(root, 1)
    Image.open(path).convert("RGB").save(path)
    return path, "mask is not a single-channel 8-bit image (PIL mode RGB)"


def label_50(root: Path) -> tuple[Path, str]:
    path = _first(root, 1)
    labels = np.array(Image.open(path))
    labels[3, 5] = 50
    Image.fromarray(labels).save(path)
    return path, "labels 50 outside 0..39"


def malformed_line(root: Path) -> tuple[Path, str]:
    path = root / "train.txt"
    lines = path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:2])
    path.write_text("\n".join(lines) + "\n")
    return path, "line 3: expected 3 tab-separated paths"


def swapped_columns(root: Path) -> tuple[Path, str]:
    path = root / "train.txt"
    lines = path.read_text().splitlines()
    rgb, mask, depth = lines[1].split("\t")
    lines[1] = "\t".join([rgb, depth, mask])
    path.write_text("\n".join(lines) + "\n")
    return path, "line 2: mask path"


def empty_list(root: Path) -> tuple[Path, str]:
    path = root / "train.txt"
    path.write_text("\n")
    return path, "list file is empty"


def missing_list(root: Path) -> tuple[Path, str]:
    path = root / "train.txt"
    path.unlink()
    return path, "list file does not exist"


CORRUPTIONS = [
    truncated_png, garbage_rgb, missing_depth, size_mismatch, depth_8bit, mask_rgb, label_50,
    malformed_line, swapped_columns, empty_list, missing_list,
]  # fmt: skip


def _read_everything(root: Path, layout: str) -> None:
    data = RGBDSegmentationDataset(root, layout, "train")
    for index in range(len(data)):
        data[index]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_reader_and_check_catch(corrupt: Callable, fresh_copy: Callable) -> None:
    root = fresh_copy("nyudv2")
    path, problem = corrupt(root)

    with pytest.raises(DataError) as caught:
        _read_everything(root, "nyudv2")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and problem in message

    report = check_segmentation("nyudv2", root, progress=False)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    assert report.errors[0].startswith(f"{path}: ") and problem in report.errors[0]
    # the other split is untouched
    assert len(RGBDSegmentationDataset(root, "nyudv2", "val")) == 3


def test_sun_label_out_of_range(fresh_copy: Callable) -> None:
    root = fresh_copy("sunrgbd")
    path = root / "labels" / "train_1.png"
    labels = np.array(Image.open(path))
    labels[0, 0] = 38  # one past the 37 classes (raw labels are 1..37)
    Image.fromarray(labels).save(path)
    dataset = RGBDSegmentationDataset(root, "sunrgbd", "train")
    dataset[0]
    with pytest.raises(DataError, match=r"labels 38 outside 1\.\.37"):
        dataset[1]
    report = check_segmentation("sunrgbd", root, progress=False)
    assert report.errors == [f"{path}: labels 38 outside 1..37 (and 255 = ignore)"]


def test_sun_255_is_ignored_not_an_error(fresh_copy: Callable) -> None:
    root = fresh_copy("sunrgbd")
    path = root / "labels" / "test_0.png"
    labels = np.array(Image.open(path))
    labels[:2] = 255
    Image.fromarray(labels).save(path)
    assert bool((RGBDSegmentationDataset(root, "sunrgbd", "test")[0]["mask"][:2] == 255).all())
    assert check_segmentation("sunrgbd", root, progress=False).ok


def test_check_reports_one_error_per_bad_file(fresh_copy: Callable) -> None:
    root = fresh_copy("nyudv2")
    truncated, _ = truncated_png(root)  # mask of train line 1
    missing, _ = missing_depth(root)  # depth of train line 1
    other = root / (root / "val.txt").read_text().splitlines()[0].split("\t")[0]
    other.write_bytes(b"")
    # the same broken files listed a second time add no new error
    with (root / "val.txt").open("a") as f:
        f.write((root / "train.txt").read_text().splitlines()[0] + "\n")
    report = check_segmentation("nyudv2", root, progress=False, workers=2)
    assert sorted(e.split(": ")[0] for e in report.errors) == sorted(
        str(p) for p in (truncated, missing, other)
    )
    assert report.counts == {"train": 4, "val": 4}
