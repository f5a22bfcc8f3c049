"""Tiny NYUDv2 and SUN RGB-D datasets written in exactly the on-disk layouts of ``docs/data.md``.

Used by the tests (readers, checks, command line) instead of the real datasets, which cannot be
downloaded on the build machines. Each scene is a wall above a floor with a few elliptic
objects of other classes in front, a small rectangle of ignored pixels (missing depth there),
depth that follows the labels (wall far, floor nearer towards the bottom, each object at a
class-dependent distance) and colours that follow the class and darken with depth.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mango.tasks.rgbd.layouts import IGNORE_INDEX, NYUDV2, SUNRGBD
from mango.tasks.rgbd.palette import palette

#: NYUDv2 holds 1449 labelled frames, numbered from 1.
NYU_FRAMES = 1449


def make_scene(
    rng: np.random.Generator, size: tuple[int, int], num_classes: int, objects: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic scene: rgb uint8 (H, W, 3), depth in metres float (H, W), labels (H, W).

    Labels are class ids ``0 .. num_classes - 1`` (0 = wall, 1 = floor) and 255 = ignore;
    ignored pixels have depth 0 (missing).
    """
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = int(height * rng.uniform(0.45, 0.7))
    labels = np.where(rows < horizon, 0, 1).astype(np.int64)
    wall = rng.uniform(3.0, 5.0)
    depth = np.where(rows < horizon, wall, wall - (rows - horizon) / height * (wall - 1.0))
    classes = rng.choice(np.arange(2, num_classes), size=objects, replace=False)
    for c in classes:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.15, 0.85) * width
        ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.1, 0.25) * width
        inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
        labels[inside] = c
        depth[inside] = 1.0 + (c % 5) * 0.5 + 0.02 * (rows[inside] - cy) / ry
    top, left = rng.integers(0, height - 4), rng.integers(0, width - 6)
    labels[top : top + 4, left : left + 6] = IGNORE_INDEX
    depth = depth + rng.normal(0.0, 0.01, size=depth.shape)
    depth[labels == IGNORE_INDEX] = 0.0
    colours = palette()[labels].astype(np.float64)
    shade = 1.0 - 0.5 * np.clip(depth, 0, 10)[..., None] / 10.0
    rgb = colours * shade + rng.normal(0.0, 6.0, size=colours.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), np.clip(depth, 0, None), labels


def _write(path: Path, array: np.ndarray, **options: object) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return f"{path.parent.name}/{path.name}"


def write_nyudv2_fixture(
    root: str | os.PathLike[str],
    n_train: int = 4,
    n_test: int = 3,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write a tiny NYUDv2 folder (``rgb/``, ``depth/``, ``masks/``, ``train.txt``, ``val.txt``).

    Ids are distinct random 6-digit 1-based NYU indices; ``size`` is (height, width); depth is
    uint16 in 1/5000 m; masks are uint8 class ids 0..39 with 255 = ignore. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, NYU_FRAMES + 1), size=n_train + n_test, replace=False)
    scale = NYUDV2.depth.units_per_metre
    for split, split_ids in (("train", ids[:n_train]), ("val", ids[n_train:])):
        lines = []
        for frame in sorted(int(i) for i in split_ids):
            rgb, metres, labels = make_scene(rng, size, NYUDV2.num_classes)
            raw = np.clip(np.round(metres * scale), 0, 65535).astype(np.uint16)
            name = f"{frame:06d}.png"
            columns = {
                "rgb": _write(root / NYUDV2.folders["rgb"] / name, rgb),
                "mask": _write(root / NYUDV2.folders["mask"] / name, labels.astype(np.uint8)),
                "depth": _write(root / NYUDV2.folders["depth"] / name, raw),
            }
            lines.append("\t".join(columns[c] for c in NYUDV2.columns))
        (root / NYUDV2.list_files[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_sunrgbd_fixture(
    root: str | os.PathLike[str],
    n_train: int = 4,
    n_test: int = 3,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write a tiny SUN RGB-D folder (``RGB/*.jpg``, ``Depth/``, ``labels/``, two list files).

    Samples are ``train_0 ..`` and ``test_0 ..``; depth is uint16 in the SUN RGB-D toolbox
    encoding (millimetres rotated left by 3 bits); labels are uint8 with 0 = void and 1..37 =
    classes 0..36. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for index in range(count):
            rgb, metres, labels = make_scene(rng, size, SUNRGBD.num_classes)
            mm = np.clip(np.round(metres * 1000.0), 0, 65535).astype(np.uint32)
            raw = (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)
            raw_labels = np.where(labels == IGNORE_INDEX, 0, labels + SUNRGBD.label_offset)
            raw_labels = raw_labels.astype(np.uint8)
            stem = f"{split}_{index}"
            columns = {
                "rgb": _write(root / SUNRGBD.folders["rgb"] / f"{stem}.jpg", rgb, quality=95),
                "mask": _write(root / SUNRGBD.folders["mask"] / f"{stem}.png", raw_labels),
                "depth": _write(root / SUNRGBD.folders["depth"] / f"{stem}.png", raw),
            }
            lines.append("\t".join(columns[c] for c in SUNRGBD.columns))
        (root / SUNRGBD.list_files[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
