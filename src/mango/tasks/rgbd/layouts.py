"""On-disk layouts of the RGB-D segmentation datasets (NYUDv2, SUN RGB-D).

A :class:`SegmentationLayout` holds everything that differs between the two layouts described in
``docs/data.md``: list files per split, column order, folder names, published split sizes, the label
shift and the depth normalisation. Readers, checks and fixtures read these fields; nothing about
a dataset is hard-coded elsewhere.

Example:
    >>> layout = get_layout("sunrgbd")
    >>> layout.num_classes, layout.class_names[:3]
    (37, ('wall', 'floor', 'cabinet'))
    >>> layout.list_file("val"), layout.split_of("val")
    ('test.txt', 'test')
    >>> layout.map_labels(np.array([0, 1, 37, 255], dtype=np.uint8)).tolist()
    [255, 0, 36, 255]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mango.errors import ConfigError

#: Pixels with this label are ignored by the loss and the metrics.
IGNORE_INDEX = 255

#: The 40 NYUDv2 classes (Gupta et al. 2013), in label order 0..39.
NYU40_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip

#: Label value that marks an invalid raw label inside :meth:`SegmentationLayout.map_labels`.
INVALID_LABEL = -1


@dataclass(frozen=True)
class DepthNormalization:
    """How a raw 16-bit depth value becomes the network's depth input in [0, 1].

    With ``r`` the raw PNG value (uint16)::

        r'         = rotate_right_16(r, rotate_bits)        (identity when rotate_bits == 0)
        metres     = r' / units_per_metre
        normalised = clip(metres / max_depth_m, 0, 1)

    The bit rotation undoes the SUN RGB-D toolbox encoding, which stores millimetres rotated
    left by 3 bits (``bitor(bitshift(D, -3), bitshift(D, 13)) / 1000`` in its Matlab reader);
    for depths below 8.192 m that equals ``r / 8000``. Missing depth (``r == 0``) stays 0.

    Example:
        >>> nyu = DepthNormalization(units_per_metre=5000.0, max_depth_m=10.0)
        >>> nyu(np.array([0, 5000, 25000, 60000], dtype=np.uint16)).tolist()
        [0.0, 0.10000000149011612, 0.5, 1.0]
        >>> sun = DepthNormalization(units_per_metre=1000.0, max_depth_m=10.0, rotate_bits=3)
        >>> sun(np.array([2000 * 8], dtype=np.uint16)).tolist()  # 2 m stored as mm << 3
        [0.20000000298023224]
    """

    units_per_metre: float
    max_depth_m: float
    rotate_bits: int = 0

    def metres(self, raw: np.ndarray) -> np.ndarray:
        """Raw uint16 depth -> depth in metres (float32)."""
        value = raw.astype(np.uint32)
        if self.rotate_bits:
            value = ((value >> self.rotate_bits) | (value << (16 - self.rotate_bits))) & 0xFFFF
        return (value.astype(np.float64) / self.units_per_metre).astype(np.float32)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Raw uint16 depth -> normalised depth in [0, 1] (float32)."""
        return np.clip(self.metres(raw) / np.float32(self.max_depth_m), 0.0, 1.0).astype(np.float32)

    def as_dict(self) -> dict[str, Any]:
        """The formula and its constants, for the run config."""
        formula = "clip(rotr16(raw, rotate_bits) / units_per_metre / max_depth_m, 0, 1)"
        return {
            "formula": formula,
            "units_per_metre": self.units_per_metre,
            "max_depth_m": self.max_depth_m,
            "rotate_bits": self.rotate_bits,
        }


@dataclass(frozen=True)
class SegmentationLayout:
    """One dataset layout on disk.

    Attributes:
        name: the layout name used by ``--layout`` and the configs.
        class_names: class names in label order (after :attr:`label_offset` is applied).
        list_files: canonical split -> list file under the root (e.g. ``"train": "train.txt"``).
        split_aliases: other split names accepted by the reader -> canonical split.
        columns: the modality stored in each tab-separated column of a list line.
        folders: modality -> the folder under the root that holds its files.
        expected_counts: canonical split -> the published number of samples.
        label_offset: raw label ``v`` becomes ``v - label_offset``; raw values below the offset
            (SUN's 0 = void) and 255 become :data:`IGNORE_INDEX`.
        depth: the depth normalisation (see :class:`DepthNormalization`).
    """

    name: str
    class_names: tuple[str, ...]
    list_files: dict[str, str]
    split_aliases: dict[str, str]
    columns: tuple[str, str, str]
    folders: dict[str, str]
    expected_counts: dict[str, int]
    label_offset: int
    depth: DepthNormalization
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lut = np.full(256, INVALID_LABEL, dtype=np.int64)
        lut[: self.label_offset] = IGNORE_INDEX
        lut[self.label_offset : self.label_offset + self.num_classes] = np.arange(self.num_classes)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        object.__setattr__(self, "_lut", lut)

    @property
    def num_classes(self) -> int:
        """Number of classes (labels ``0 .. num_classes - 1``)."""
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        """The canonical splits, each with its own list file."""
        return tuple(self.list_files)

    def split_of(self, split: str) -> str:
        """Canonical split for ``split`` (e.g. NYUDv2 ``test`` -> ``val``)."""
        canonical = self.split_aliases.get(split, split)
        if canonical not in self.list_files:
            known = sorted({*self.list_files, *self.split_aliases})
            raise ConfigError(
                f"split: {self.name} has no split {split!r}; choose one of {', '.join(known)}"
            )
        return canonical

    def list_file(self, split: str) -> str:
        """Name of the list file that holds ``split`` (relative to the root)."""
        return self.list_files[self.split_of(split)]

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        """Raw uint8 mask -> int64 labels in ``[0, num_classes)`` or 255; invalid values -> -1."""
        return self._lut[raw]

    def depth_config(self) -> dict[str, Any]:
        """The depth normalisation as a dict, to be recorded in the run config."""
        return {"layout": self.name, **self.depth.as_dict()}


NYUDV2 = SegmentationLayout(
    name="nyudv2",
    class_names=NYU40_CLASS_NAMES,
    list_files={"train": "train.txt", "val": "val.txt"},
    split_aliases={"test": "val"},
    columns=("rgb", "mask", "depth"),
    folders={"rgb": "rgb", "mask": "masks", "depth": "depth"},
    expected_counts={"train": 795, "val": 654},
    label_offset=0,
    # Kinect v1 depth in 1/5000 m (TokenFusion convention); its range ends near 10 m.
    depth=DepthNormalization(units_per_metre=5000.0, max_depth_m=10.0),
)

SUNRGBD = SegmentationLayout(
    name="sunrgbd",
    class_names=NYU40_CLASS_NAMES[:37],
    list_files={"train": "train.txt", "test": "test.txt"},
    split_aliases={"val": "test"},
    columns=("rgb", "mask", "depth"),
    folders={"rgb": "RGB", "mask": "labels", "depth": "Depth"},
    expected_counts={"train": 5285, "test": 5050},
    label_offset=1,
    # SUN RGB-D toolbox encoding: millimetres rotated left by 3 bits; sensors end near 10 m.
    depth=DepthNormalization(units_per_metre=1000.0, max_depth_m=10.0, rotate_bits=3),
)

LAYOUTS: dict[str, SegmentationLayout] = {NYUDV2.name: NYUDV2, SUNRGBD.name: SUNRGBD}


def get_layout(name: str | SegmentationLayout) -> SegmentationLayout:
    """The layout called ``name`` (a layout object is returned unchanged)."""
    if isinstance(name, SegmentationLayout):
        return name
    if name not in LAYOUTS:
        raise ConfigError(f"layout: unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]
