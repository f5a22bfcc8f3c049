"""Reading the ``tensors`` layout: one ``.npz`` file per split, one array per modality.

A split file ``<root>/<split>.npz`` (``train``, ``test``, optionally ``val``) holds:

- one array per modality, keyed by its name: ``(N, L, C)`` (``L`` tokens of ``C`` features) or
  ``(N, C)`` (a vector), any real dtype;
- ``label``: ``(N,)`` integers ``0..K-1`` (multi-class) or ``(N, K)`` of 0/1 (multi-label);
- optionally ``id``: ``(N,)`` strings naming the samples (default ``<split>-<index>``).

Files are read with ``allow_pickle=False``: an object array (ragged shapes, Python objects) is
refused, never unpickled. Every problem is a one-line :class:`~mango.errors.DataError` that
names the file and the array.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mango.errors import DataError

SPLITS = ("train", "val", "test")
LABEL, ID = "label", "id"
RESERVED = (LABEL, ID)


@dataclass(frozen=True)
class SplitArrays:
    """The validated arrays of one split file."""

    source: Path
    arrays: dict[str, np.ndarray]  # modality -> (N, L, C) or (N, C), float32
    label: np.ndarray  # (N,) int64 or (N, K) float32 of 0/1
    ids: list[str]

    def __len__(self) -> int:
        return len(self.label)

    @property
    def modalities(self) -> list[str]:
        """Modality names in file order."""
        return list(self.arrays)


def split_path(root: str | Path, split: str) -> Path:
    """``<root>/<split>.npz``."""
    return Path(root) / f"{split}.npz"


def infer_target(label: np.ndarray) -> str:
    """``multiclass`` for a 1-D label array, ``multilabel`` for a 2-D one.

    Example:
        >>> infer_target(np.array([0, 2, 1])), infer_target(np.array([[1, 0], [0, 1]]))
        ('multiclass', 'multilabel')
    """
    return "multiclass" if label.ndim == 1 else "multilabel"


#: what reading a damaged zip member raises (encrypted or unsupported flags: RuntimeError,
#: NotImplementedError; a corrupt deflate stream: zlib.error)
_ZIP_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(
                f"{path}: not a readable .npz archive (not a zip file; pickled data is never loaded)"
            ) from None
        raise DataError(f"{path}: not a readable .npz archive ({type(error).__name__})") from None
    except _ZIP_ERRORS as error:
        raise DataError(f"{path}: not a readable .npz archive ({type(error).__name__})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive (a single .npy array)")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error):
                    raise DataError(
                        f"{path}: array {key!r} is an object array (ragged shapes or Python "
                        "objects); store one numeric array per modality"
                    ) from None
                raise DataError(f"{path}: array {key!r} cannot be read ({error})") from None
            except _ZIP_ERRORS as error:
                raise DataError(
                    f"{path}: array {key!r} cannot be read ({type(error).__name__})"
                ) from None
    return arrays


def _check_label(path: Path, label: np.ndarray, target: str | None) -> tuple[np.ndarray, str]:
    inferred = infer_target(label) if label.ndim in (1, 2) else None
    if inferred is None:
        raise DataError(f"{path}: array 'label' has shape {label.shape}; expected (N,) or (N, K)")
    target = target or inferred
    if target != inferred:
        raise DataError(
            f"{path}: array 'label' has shape {label.shape}, which is {inferred}, but "
            f"data.target is {target}"
        )
    if label.dtype.kind not in "biuf":
        raise DataError(f"{path}: array 'label' has dtype {label.dtype}; expected integers")
    if label.dtype.kind == "f" and not np.isfinite(label).all():
        raise DataError(f"{path}: array 'label' holds NaN or Inf")
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        raise DataError(f"{path}: array 'label' holds non-integer values")
    if target == "multiclass":
        if len(label) and label.min() < 0:
            raise DataError(f"{path}: array 'label' holds {label.min()}; classes start at 0")
        return label.astype(np.int64), target
    if label.shape[1] < 2:
        raise DataError(f"{path}: array 'label' has {label.shape[1]} column; multi-label needs 2+")
    if not np.isin(label, (0, 1)).all():
        raise DataError(f"{path}: array 'label' must hold only 0 and 1 for multi-label targets")
    return label.astype(np.float32), target


def read_split(
    root: str | Path,
    split: str,
    modalities: Sequence[str] | None = None,
    target: str | None = None,
) -> SplitArrays:
    """Read and validate ``<root>/<split>.npz``.

    Args:
        modalities: the arrays to use (default: every array except ``label`` and ``id``).
        target: ``multiclass`` or ``multilabel``; inferred from ``label`` when ``None``.

    Raises:
        DataError: a missing or unreadable file, an object array, a missing ``label`` or
            modality, a mismatched sample count, NaN/Inf features, a bad shape or label value.
    """
    path = split_path(root, split)
    raw = _load(path)
    if LABEL not in raw:
        raise DataError(f"{path}: no 'label' array (arrays found: {', '.join(raw) or 'none'})")
    names = list(modalities) if modalities is not None else [k for k in raw if k not in RESERVED]
    missing = [name for name in names if name not in raw]
    if missing:
        raise DataError(
            f"{path}: modality {missing[0]!r} named in data.modalities is not in the file "
            f"(arrays found: {', '.join(raw)})"
        )
    if len(names) < 2:
        raise DataError(f"{path}: {len(names)} modality array(s) ({names}); fusion needs 2+")
    label, _ = _check_label(path, raw[LABEL], target)
    count = len(label)
    if count == 0:
        raise DataError(f"{path}: split {split!r} has no samples")
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        array = raw[name]
        if array.ndim not in (2, 3):
            raise DataError(
                f"{path}: array {name!r} has shape {array.shape}; expected (N, L, C) or (N, C)"
            )
        if array.shape[0] != count:
            raise DataError(
                f"{path}: array {name!r} has {array.shape[0]} samples, 'label' has {count}"
            )
        if min(array.shape[1:]) < 1:
            raise DataError(f"{path}: array {name!r} has an empty axis, shape {array.shape}")
        if array.dtype.kind not in "biuf":
            raise DataError(f"{path}: array {name!r} has dtype {array.dtype}; expected numbers")
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            where = np.argwhere(~np.isfinite(values))[0]
            raise DataError(f"{path}: array {name!r} holds NaN or Inf (sample {where[0]})")
        arrays[name] = values
    ids = [f"{split}-{i}" for i in range(count)]
    if ID in raw:
        found = raw[ID]
        if found.shape != (count,) or found.dtype.kind not in "USiu":
            raise DataError(f"{path}: array 'id' must be (N,) strings or integers, {found.shape}")
        ids = [str(v) for v in found.tolist()]
    return SplitArrays(path, arrays, label, ids)


def check_compatible(reference: SplitArrays, other: SplitArrays) -> None:
    """Raise a DataError unless ``other`` has ``reference``'s modalities, shapes and labels."""
    for name, array in reference.arrays.items():
        if name not in other.arrays:
            raise DataError(f"{other.source}: no array {name!r} ({reference.source} has one)")
        if other.arrays[name].shape[1:] != array.shape[1:]:
            raise DataError(
                f"{other.source}: array {name!r} has per-sample shape "
                f"{other.arrays[name].shape[1:]}, {reference.source} has {array.shape[1:]}"
            )
    if reference.label.shape[1:] != other.label.shape[1:]:
        raise DataError(
            f"{other.source}: 'label' has per-sample shape {other.label.shape[1:]}, "
            f"{reference.source} has {reference.label.shape[1:]}"
        )


def check_classes(split: SplitArrays, classes: int) -> None:
    """Raise a DataError if a multi-class label is ``>= classes``."""
    if split.label.ndim == 1 and split.label.max() >= classes:
        raise DataError(
            f"{split.source}: array 'label' holds class {split.label.max()}, outside 0..{classes - 1} "
            "(set data.classes, or check the labels)"
        )


def shapes(split: SplitArrays) -> Mapping[str, tuple[int, ...]]:
    """Per-sample shape of every modality, e.g. ``{"audio": (20, 8), "meta": (5,)}``."""
    return {name: tuple(array.shape[1:]) for name, array in split.arrays.items()}


class TensorsDataset(Dataset[dict[str, Any]]):
    """Samples ``{"id", "inputs": {modality: tensor}, "label"}`` of one split (or a subset)."""

    def __init__(self, split: SplitArrays, indices: list[int] | None = None) -> None:
        self.split = split
        self.indices = list(range(len(split))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        i = self.indices[item]
        return {
            "id": self.split.ids[i],
            "inputs": {m: torch.from_numpy(a[i]) for m, a in self.split.arrays.items()},
            "label": torch.as_tensor(self.split.label[i]),
        }
