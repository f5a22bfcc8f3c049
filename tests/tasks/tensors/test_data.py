"""The ``tensors`` readers and data check: every bad input is one DataError line naming the file."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mango.errors import DataError
from mango.tasks.tensors.check import check_tensors
from mango.tasks.tensors.data import TensorsDataset, infer_target, read_split, split_path
from mango.testing.tensors import tensors_arrays, write_npz


def _rewrite(root: Path, split: str, change: Callable[[dict[str, np.ndarray]], None]) -> Path:
    path = split_path(root, split)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    write_npz(path, arrays)
    return path


def test_reads_modalities_labels_and_ids(multiclass_root: Path) -> None:
    data = read_split(multiclass_root, "train")
    assert data.modalities == ["a", "b"]
    assert data.arrays["a"].shape == (96, 6, 5) and data.arrays["b"].shape == (96, 12)
    assert data.arrays["a"].dtype == np.float32
    assert data.label.dtype == np.int64 and set(np.unique(data.label)) <= {0, 1, 2, 3}
    assert data.ids[0] == "s0-00000" and len(set(data.ids)) == 96
    sample = TensorsDataset(data)[3]
    assert set(sample) == {"id", "inputs", "label"}
    assert torch.equal(sample["inputs"]["a"], torch.from_numpy(data.arrays["a"][3]))
    assert int(sample["label"]) == data.label[3]


def test_multilabel_and_default_ids(multilabel_root: Path, tmp_path: Path) -> None:
    data = read_split(multilabel_root, "val")
    assert infer_target(data.label) == "multilabel"
    assert data.label.shape == (24, 3) and data.label.dtype == np.float32
    arrays = tensors_arrays(5)
    del arrays["id"]
    write_npz(tmp_path / "train.npz", arrays)
    assert read_split(tmp_path, "train").ids == [f"train-{i}" for i in range(5)]


def test_modalities_subset_and_order(tmp_path: Path) -> None:
    arrays = tensors_arrays(4)
    arrays["c"] = np.ones((4, 3), np.float64)
    write_npz(tmp_path / "train.npz", arrays)
    assert read_split(tmp_path, "train").modalities == ["a", "b", "c"]
    assert read_split(tmp_path, "train", ["c", "a"]).modalities == ["c", "a"]


def _nan(arrays: dict[str, np.ndarray]) -> None:
    arrays["a"][2, 1, 0] = np.nan


def _inf(arrays: dict[str, np.ndarray]) -> None:
    arrays["b"][5, 3] = np.inf


def _short(arrays: dict[str, np.ndarray]) -> None:
    arrays["b"] = arrays["b"][:-1]


def _no_label(arrays: dict[str, np.ndarray]) -> None:
    del arrays["label"]


def _negative_label(arrays: dict[str, np.ndarray]) -> None:
    arrays["label"][0] = -1


def _fractional_label(arrays: dict[str, np.ndarray]) -> None:
    arrays["label"] = arrays["label"].astype(np.float64) + 0.5


def _ragged(arrays: dict[str, np.ndarray]) -> None:
    ragged = np.empty(len(arrays["label"]), dtype=object)
    ragged[:] = [np.zeros(k % 3 + 1) for k in range(len(ragged))]
    arrays["a"] = ragged


def _four_axes(arrays: dict[str, np.ndarray]) -> None:
    arrays["a"] = arrays["a"][..., None]


def _strings(arrays: dict[str, np.ndarray]) -> None:
    arrays["b"] = np.array([["x"] * 12] * len(arrays["label"]))


def _one_modality(arrays: dict[str, np.ndarray]) -> None:
    del arrays["b"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_nan, "'a' holds NaN or Inf (sample 2)"),
        (_inf, "'b' holds NaN or Inf (sample 5)"),
        (_short, "'b' has 95 samples, 'label' has 96"),
        (_no_label, "no 'label' array"),
        (_negative_label, "classes start at 0"),
        (_fractional_label, "non-integer"),
        (_ragged, "'a' is an object array"),
        (_four_axes, "expected (N, L, C) or (N, C)"),
        (_strings, "'b' has dtype <U1"),
        (_one_modality, "fusion needs 2+"),
    ],
)
def test_bad_arrays_are_one_line_naming_the_file(
    tensors_copy: Path, change: Callable[[dict[str, np.ndarray]], None], words: str
) -> None:
    victim = _rewrite(tensors_copy, "train", change)
    with pytest.raises(DataError) as caught:
        read_split(tensors_copy, "train")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{victim}: ") and words in message, message
    report = check_tensors(tensors_copy)
    assert not report.ok and report.errors[0].startswith(str(victim)), report.errors


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"this is not a zip archive", "not a readable .npz archive"),
        (b"", "not a readable .npz archive"),
    ],
)
def test_files_that_are_not_npz(tensors_copy: Path, content: bytes, words: str) -> None:
    victim = split_path(tensors_copy, "train")
    victim.write_bytes(content)
    with pytest.raises(DataError, match=words):
        read_split(tensors_copy, "train")


def test_npy_renamed_npz_and_truncated_archive(tensors_copy: Path) -> None:
    victim = split_path(tensors_copy, "train")
    with victim.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        read_split(tensors_copy, "train")
    test = split_path(tensors_copy, "test")
    data = test.read_bytes()
    test.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"^{test}: "):
        read_split(tensors_copy, "test")
    assert zipfile.is_zipfile(split_path(tensors_copy, "train")) is False


@pytest.mark.parametrize(
    "flag,error", [(0x1, "RuntimeError"), (0x20, "NotImplementedError")]
)  # found by the fuzz test: an encrypted member, and one with "compressed patched data"
def test_zip_member_flags_zipfile_refuses_are_one_line(
    tensors_copy: Path, flag: int, error: str
) -> None:
    victim = split_path(tensors_copy, "train")
    data = bytearray(victim.read_bytes())
    central = data.index(b"PK\x01\x02")  # first central-directory entry; its flags at +8
    data[central + 8] |= flag
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"^{victim}: array .* cannot be read \\({error}\\)$"):
        read_split(tensors_copy, "train")


def test_named_modality_absent_and_target_mismatch(tensors_copy: Path) -> None:
    path = split_path(tensors_copy, "train")
    with pytest.raises(DataError, match=f"^{path}: modality 'audio' named in data.modalities"):
        read_split(tensors_copy, "train", ["a", "audio"])
    with pytest.raises(DataError, match="which is multiclass, but data.target is multilabel"):
        read_split(tensors_copy, "train", target="multilabel")


def test_multilabel_values_must_be_binary(multilabel_root: Path, tmp_path: Path) -> None:
    arrays = tensors_arrays(6, "multilabel")
    arrays["label"][0, 0] = 2
    write_npz(tmp_path / "train.npz", arrays)
    with pytest.raises(DataError, match="only 0 and 1"):
        read_split(tmp_path, "train")


def test_check_reports_counts_warnings_and_split_mismatches(tensors_copy: Path) -> None:
    report = check_tensors(tensors_copy)
    assert report.ok and report.counts == {"train": 96, "test": 32}
    assert any("val.npz: not found" in w for w in report.warnings)

    def wider(arrays: dict[str, np.ndarray]) -> None:
        arrays["b"] = np.concatenate([arrays["b"], arrays["b"]], axis=1)

    victim = _rewrite(tensors_copy, "test", wider)
    report = check_tensors(tensors_copy)
    assert report.errors == [
        f"{victim}: array 'b' has per-sample shape (24,), {split_path(tensors_copy, 'train')} has (12,)"
    ]


def test_check_flags_test_classes_unseen_in_training(tensors_copy: Path) -> None:
    def more_classes(arrays: dict[str, np.ndarray]) -> None:
        arrays["label"][0] = 7

    victim = _rewrite(tensors_copy, "test", more_classes)
    report = check_tensors(tensors_copy)
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{victim}: array 'label'")
    assert "outside 0..3" in report.errors[0]


def test_check_missing_files(tmp_path: Path) -> None:
    report = check_tensors(tmp_path)
    assert report.errors == [
        f"{tmp_path / 'train.npz'}: split file not found",
        f"{tmp_path / 'test.npz'}: split file not found",
    ]
