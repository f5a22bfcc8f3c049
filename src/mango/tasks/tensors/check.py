"""``mango data check --layout tensors``: verify a folder of ``train/val/test.npz`` split files.

Errors: a missing ``train.npz`` or ``test.npz``; any problem :func:`~.readers.read_split` refuses
(unreadable archive, object array, missing ``label``, mismatched sample counts, NaN/Inf, bad
shapes or label values); splits whose modalities, per-sample shapes or label widths differ from
``train.npz``'s; multi-class test/val labels outside the classes seen in training.
Warnings: no ``val.npz`` (a seeded holdout of train is used); classes absent from a split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mango.errors import DataError
from mango.tasks.check import CheckReport
from mango.tasks.tensors.data import (
    SplitArrays,
    check_classes,
    check_compatible,
    read_split,
    split_path,
)


def check_tensors(root: str | Path) -> CheckReport:
    """Check every split file under ``root``; never raises (problems go into the report).

    Example:
        >>> import tempfile
        >>> from mango.testing.tensors import write_tensors_fixture
        >>> root = write_tensors_fixture(tempfile.mkdtemp(), sizes=(16, 0, 8))
        >>> report = check_tensors(root)
        >>> report.ok, report.counts
        (True, {'train': 16, 'test': 8})
    """
    root = Path(root)
    report = CheckReport("tensors", root)
    splits: dict[str, SplitArrays] = {}
    for split in ("train", "val", "test"):
        path = split_path(root, split)
        if not path.is_file():
            if split == "val":
                report.warn(path, "not found; a seeded holdout of train.npz is used for validation")
            else:
                report.error(path, "split file not found")
            continue
        try:
            splits[split] = read_split(root, split)
        except DataError as error:
            report.errors.append(str(error))
            continue
        report.counts[split] = len(splits[split])
    train = splits.get("train")
    if train is None:
        return report
    classes = int(train.label.max()) + 1 if train.label.ndim == 1 else None
    for name, data in splits.items():
        try:
            if name != "train":
                check_compatible(train, data)
                if classes is not None:
                    check_classes(data, classes)
        except DataError as error:
            report.errors.append(str(error))
            continue
        if classes is not None:
            absent = sorted(set(range(classes)) - set(np.unique(data.label).tolist()))
            if absent:
                report.warn(data.source, f"no samples of class(es) {absent}")
    return report
