"""Fuzzing the ``tensors`` reader and ``data check`` with random corruptions of the split files.

Property: reading every split either gives well-typed samples (float32 finite arrays of the
shapes the file holds, labels of the inferred target) or raises a one-line DataError that names
the broken file under the data root; ``check_tensors`` never raises and reports an error
whenever the reader refuses the data.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.errors import DataError
from mango.tasks.tensors.check import check_tensors
from mango.tasks.tensors.data import TensorsDataset, read_split, split_path
from mango.testing.tensors import tensors_arrays, write_npz

SPLITS = ("train", "test")


def _corrupt_array(draw: Any, array: np.ndarray) -> np.ndarray:
    kind = draw(
        st.sampled_from(["nan", "inf", "cut", "axis", "dtype", "object", "scalar", "empty"])
    )
    if kind in ("nan", "inf") and array.dtype.kind == "f":
        array = array.copy()
        array.flat[draw(st.integers(0, array.size - 1))] = np.nan if kind == "nan" else -np.inf
    elif kind == "cut":
        array = array[: draw(st.integers(0, max(len(array) - 1, 0)))]
    elif kind == "axis":
        array = array[..., None] if draw(st.booleans()) else array.reshape(len(array), -1)[:, 0]
    elif kind == "dtype" and array.dtype.kind in "biuf":
        array = array.astype(draw(st.sampled_from(["U3", "bool", "complex64", "int8"])))
    elif kind == "object":
        ragged = np.empty(len(array), dtype=object)
        ragged[:] = [np.zeros(k % 2 + 1) for k in range(len(array))]
        array = ragged
    elif kind == "scalar":
        array = np.array(draw(st.floats(allow_nan=True, allow_infinity=True)))
    else:
        array = np.zeros((0, *array.shape[1:]), array.dtype)
    return array


@st.composite
def corruption(draw: Any) -> tuple[str, str, Any]:
    split = draw(st.sampled_from(SPLITS))
    action = draw(st.sampled_from(["array", "drop", "bytes", "truncate", "label"]))
    return split, action, draw(st.randoms(use_true_random=False))


def _apply(root: Path, split: str, action: str, rng: Any, draw: Any) -> None:
    path = split_path(root, split)
    if action in ("bytes", "truncate"):
        data = bytearray(path.read_bytes())
        if action == "truncate":
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        return
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    key = rng.choice(sorted(arrays))
    if action == "drop":
        del arrays[key]
    elif action == "label":
        arrays["label"] = arrays["label"] * rng.choice([-1, 3, 100]) + rng.choice([0, 1])
    else:
        arrays[key] = _corrupt_array(draw, arrays[key])
    write_npz(path, arrays)


def _assert_well_typed(root: Path) -> None:
    for split in SPLITS:
        data = read_split(root, split)
        sample = TensorsDataset(data)[len(data) - 1]
        for name, value in sample["inputs"].items():
            assert value.dtype == torch.float32 and bool(torch.isfinite(value).all())
            assert tuple(value.shape) == data.arrays[name].shape[1:]
        assert sample["label"].dtype in (torch.int64, torch.float32)


@settings(max_examples=60, deadline=None)
@given(corruption(), st.data())
def test_corrupted_files_read_or_fail_in_one_line(case: tuple[str, str, Any], data: Any) -> None:
    split, action, rng = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for offset, name in enumerate(SPLITS):
            write_npz(split_path(root, name), tensors_arrays(8, seed=offset))
        _apply(root, split, action, rng, data.draw)
        try:
            _assert_well_typed(root)
            refused = None
        except DataError as error:
            refused = str(error)
        report = check_tensors(root)
        if refused is not None:
            assert "\n" not in refused and refused.startswith(str(root)), refused
            assert not report.ok, refused
        for line in report.errors:
            assert "\n" not in line and line.startswith(str(root)), line


def test_pickled_object_array_never_runs(tmp_path: Path) -> None:
    """An object array whose unpickling would create a marker file is refused unread."""
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    arrays = tensors_arrays(4)
    payload = np.empty(4, dtype=object)
    payload[:] = [Payload() for _ in range(4)]
    arrays["a"] = payload
    write_npz(tmp_path / "train.npz", arrays)
    with tmp_path.joinpath("pickle.npy").open("wb") as f:
        pickle.dump(Payload(), f)
    try:
        read_split(tmp_path, "train")
    except DataError as error:
        assert "'a' is an object array" in str(error)
    else:
        raise AssertionError("an object array was read")
    (tmp_path / "pickle.npy").rename(tmp_path / "test.npz")
    report = check_tensors(tmp_path)
    assert len(report.errors) == 2 and "pickled data is never loaded" in report.errors[1]
    assert not marker.exists()
