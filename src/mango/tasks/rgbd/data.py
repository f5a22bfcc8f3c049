"""Readers and Datasets of the RGB-D segmentation tasks (NYUDv2, SUN RGB-D; the synthetic scenes).

Every file is validated while it is read; a bad file raises :class:`BadFileError` (a
:class:`~mango.errors.DataError`) whose one-line message is ``"<file>: <what is wrong>"``. The
data check (:mod:`mango.tasks.rgbd.check`) calls the same functions, so the reader and
``mango data check`` always agree on what is wrong.

A list line holds three relative paths, separated by a tab (spaces are accepted too), in the
layout's column order (rgb, mask, depth)::

    rgb/000003.png<TAB>masks/000003.png<TAB>depth/000003.png
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mango.errors import DataError
from mango.tasks.files import BadFileError, open_image, read_list_lines
from mango.tasks.rgbd.layouts import (
    IGNORE_INDEX,
    INVALID_LABEL,
    SegmentationLayout,
    get_layout,
)

#: PIL modes of a single-channel 16-bit image.
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes of a single-channel 8-bit image (grey levels or palette indices).
MASK_MODES = ("L", "P")
#: PIL modes accepted for the colour image (converted to RGB).
RGB_MODES = ("RGB", "RGBA", "RGBX", "L", "P", "CMYK", "YCbCr")


@dataclass(frozen=True)
class Entry:
    """One list line: the sample id and the absolute paths of its three files."""

    name: str
    rgb: Path
    mask: Path
    depth: Path


def parse_list(path: Path, layout: SegmentationLayout) -> tuple[list[Entry], list[tuple[int, str]]]:
    """Parse a list file; return the well-formed entries and ``(line number, problem)`` pairs.

    Blank lines are skipped. A line is well-formed when it has exactly three fields, each a
    relative path inside the folder of its column's modality (so swapped columns are caught).
    Raises :class:`BadFileError` when the file is missing or unreadable.
    """
    root = path.parent
    entries: list[Entry] = []
    problems: list[tuple[int, str]] = []
    for number, line in read_list_lines(path):
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != len(layout.columns):
            problems.append(
                (
                    number,
                    f"expected {len(layout.columns)} tab-separated paths "
                    f"({', '.join(layout.columns)}), found {len(fields)}",
                )
            )
            continue
        paths: dict[str, Path] = {}
        for modality, value in zip(layout.columns, fields, strict=True):
            folder = layout.folders[modality]
            parts = PurePosixPath(value).parts
            if len(parts) < 2 or parts[0] != folder or ".." in parts:
                problems.append((number, f"{modality} path {value!r} is not under {folder}/"))
                break
            paths[modality] = root.joinpath(*parts)
        else:
            name = PurePosixPath(fields[layout.columns.index("rgb")]).stem
            entries.append(Entry(name, paths["rgb"], paths["mask"], paths["depth"]))
    return entries, problems


def read_entries(root: Path, layout: SegmentationLayout, split: str) -> list[Entry]:
    """The entries of ``split``; a missing, empty or malformed list file raises DataError."""
    path = root / layout.list_file(split)
    entries, problems = parse_list(path, layout)
    if problems:
        number, problem = problems[0]
        raise BadFileError(path, f"line {number}: {problem}")
    if not entries:
        raise BadFileError(path, "list file is empty")
    return entries


def open_rgb(path: Path, decode: bool = True) -> Image.Image:
    """Open a colour image (any 8-bit colour or grey mode)."""
    return open_image(path, RGB_MODES, "is not an 8-bit colour image", decode)


def open_depth(path: Path, decode: bool = True) -> Image.Image:
    """Open a depth image; it must be single-channel 16-bit."""
    return open_image(path, DEPTH_MODES, "depth is not a single-channel 16-bit image", decode)


def open_mask(path: Path, decode: bool = True) -> Image.Image:
    """Open a label mask; it must be single-channel 8-bit (grey or palette indices)."""
    return open_image(path, MASK_MODES, "mask is not a single-channel 8-bit image", decode)


def check_sizes(rgb: tuple[Path, Image.Image], *others: tuple[Path, Image.Image]) -> None:
    """Raise for the first image whose (width, height) differs from the rgb image's."""
    rgb_path, rgb_image = rgb
    for path, image in others:
        if image.size != rgb_image.size:
            (w, h), (rw, rh) = image.size, rgb_image.size
            raise BadFileError(path, f"size {w}x{h} differs from rgb {rw}x{rh} ({rgb_path})")


def mask_labels(path: Path, image: Image.Image, layout: SegmentationLayout) -> np.ndarray:
    """Decoded mask -> int64 labels (layout shift applied); out-of-range labels raise."""
    labels = layout.map_labels(np.asarray(image, dtype=np.uint8))
    bad = labels == INVALID_LABEL
    if bad.any():
        raw = np.unique(np.asarray(image)[bad])
        shown = ", ".join(str(v) for v in raw[:5]) + (", ..." if raw.size > 5 else "")
        low, high = layout.label_offset, layout.label_offset + layout.num_classes - 1
        raise BadFileError(
            path, f"labels {shown} outside {low}..{high} (and {IGNORE_INDEX} = ignore)"
        )
    return labels


def load_arrays(
    entry: Entry, layout: SegmentationLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate one entry: rgb uint8 (H, W, 3), raw depth uint16 (H, W), labels int64."""
    rgb = open_rgb(entry.rgb)
    depth = open_depth(entry.depth)
    mask = open_mask(entry.mask)
    check_sizes((entry.rgb, rgb), (entry.depth, depth), (entry.mask, mask))
    labels = mask_labels(entry.mask, mask, layout)
    rgb_array = np.array(rgb.convert("RGB"), dtype=np.uint8)
    depth_array = np.array(depth, dtype=np.uint16)
    return rgb_array, depth_array, labels


class RGBDSegmentationDataset(Dataset[dict[str, Any]]):
    """The samples of one split of an RGB-D segmentation dataset on disk.

    Each item is a dict:

    - ``"rgb"``: float32 (3, H, W), values ``pixel / 255`` in [0, 1];
    - ``"depth"``: float32 (1, H, W), the layout's normalisation (see
      :class:`~mango.tasks.rgbd.layouts.DepthNormalization`);
    - ``"mask"``: int64 (H, W), classes ``0 .. num_classes - 1`` and 255 = ignore;
    - ``"name"``: the sample id (file stem, e.g. ``"000003"`` or ``"train_0"``);
    - ``"rgb_path"``: the rgb file as a string.

    The list file is read (and validated) when the dataset is built; image files when an item is
    read. ``transform(sample)`` is applied last when given. ``max_items`` keeps the first items.

    Example:
        >>> import tempfile
        >>> from mango.testing.rgbd import write_nyudv2_fixture
        >>> root = write_nyudv2_fixture(tempfile.mkdtemp(), n_train=2, n_test=1)
        >>> data = RGBDSegmentationDataset(root, "nyudv2", "test")
        >>> item = data[0]
        >>> len(data), item["rgb"].shape, item["depth"].shape, item["mask"].dtype
        (1, torch.Size([3, 48, 64]), torch.Size([1, 48, 64]), torch.int64)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: str | SegmentationLayout,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        max_items: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.layout = get_layout(layout)
        self.split = self.layout.split_of(split)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder does not exist")
        entries = read_entries(self.root, self.layout, self.split)
        if max_items is not None:
            if max_items < 1:
                raise DataError(f"max_items: must be at least 1, got {max_items}")
            entries = entries[:max_items]
        self.entries = entries
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        rgb, depth, labels = load_arrays(entry, self.layout)
        sample: dict[str, Any] = {
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0),
            "depth": torch.from_numpy(self.layout.depth(depth))[None],
            "mask": torch.from_numpy(labels),
            "name": entry.name,
            "rgb_path": str(entry.rgb),
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


class NamedScenes(Dataset[dict[str, Any]]):
    """The synthetic scenes (:class:`~mango.data.synthetic.SyntheticScenes`) of ``split``, each
    with a ``name`` (``<split>_<index>``) as the on-disk datasets give their samples."""

    def __init__(self, base: Dataset[dict[str, Any]], split: str) -> None:
        self.base, self.split = base, split

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], "name": f"{self.split}_{index:05d}"}
