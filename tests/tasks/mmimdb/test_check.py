"""check_mmimdb on good fixtures and on broken copies of both formats."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mango.tasks.check import CheckReport
from mango.tasks.mmimdb import check as check_module
from mango.tasks.mmimdb.check import check_mmimdb


def _errors_containing(report: CheckReport, *fragments: str) -> list[str]:
    return [e for e in report.errors if all(f in e for f in fragments)]


def test_good_fixtures_pass_with_size_warnings(hdf5_root: Path, raw_root: Path) -> None:
    for root in (hdf5_root, raw_root):
        report = check_mmimdb(root)
        assert isinstance(report, CheckReport) and report.layout == "mmimdb"
        assert report.ok, report.errors
        assert report.counts == {"train": 6, "dev": 3, "test": 4}
        assert len(report.warnings) == 3
        assert "split 'train' has 6 movies, the published split has 15552" in report.warnings[0]


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    assert _errors_containing(check_mmimdb(tmp_path / "absent"), "absent", "does not exist")
    report = check_mmimdb(tmp_path)
    assert not report.ok and report.counts == {}
    assert _errors_containing(report, "no MM-IMDb data")


def test_hdf5_wrong_dtype_is_reported(hdf5_copy: Path, replace_dataset) -> None:
    replace_dataset(hdf5_copy, "images", lambda v: v.astype(np.float32))
    report = check_mmimdb(hdf5_copy)
    assert report.errors == [
        f"{hdf5_copy / 'multimodal_imdb.hdf5'}: key 'images' has dtype float32, "
        "expected int32 (Caffe BGR minus mean)"
    ]


def test_hdf5_row_problems(hdf5_copy: Path) -> None:
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        f["sequences"][3] = np.array([], dtype=np.int32)
        f["sequences"][5] = np.array([1, 10**6], dtype=np.int32)
        images = f["images"]
        images[7, 0, 0, 0] = 1000
        ids = f["imdb_ids"][()]
        ids[12] = ids[0]
        f["imdb_ids"][...] = ids
    report = check_mmimdb(hdf5_copy)
    assert report.counts == {"train": 6, "dev": 3, "test": 4}
    assert len(report.errors) == 4, report.errors
    assert _errors_containing(report, "sequences row 3 (imdb id 0000004)", "empty plot")
    assert _errors_containing(report, "sequences row 5", "word id 1000000")
    assert _errors_containing(report, "images row 7", "1000")
    assert _errors_containing(report, "1 imdb ids appear more than once", "'0000001'")
    # without decoding, the image row is not read
    assert len(check_mmimdb(hdf5_copy, decode=False).errors) == 3


def test_hdf5_overlapping_splits_and_missing_metadata(hdf5_copy: Path) -> None:
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        table = f.attrs["split"]
        table["start"][table["split"] == b"dev"] = 4
        f.attrs["split"] = table
    (hdf5_copy / "metadata.npy").unlink()
    report = check_mmimdb(hdf5_copy)
    assert report.counts["dev"] == 5
    assert _errors_containing(report, "splits 'train' and 'dev' share rows [4, 6)")
    assert _errors_containing(report, "metadata.npy", "file not found")
    assert len(report.errors) == 2


def test_hdf5_row_errors_are_capped(hdf5_copy: Path, monkeypatch) -> None:
    monkeypatch.setattr(check_module, "MAX_ROW_ERRORS", 2)
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        for row in range(5):
            f["sequences"][row] = np.array([], dtype=np.int32)
    report = check_mmimdb(hdf5_copy)
    assert len(report.errors) == 3
    assert report.errors[-1].endswith("... and 3 more rows like the above")


def test_raw_broken_files_are_all_reported(raw_copy: Path) -> None:
    split = json.loads((raw_copy / "split.json").read_text())
    folder = raw_copy / "dataset"
    a, b, c, d = split["train"][:4]
    (folder / f"{a}.jpeg").unlink()
    (folder / f"{b}.jpeg").write_bytes(b"not a jpeg")
    (folder / f"{c}.json").write_text("{oops")
    record = json.loads((folder / f"{d}.json").read_text())
    record["plot"], record["genres"] = [], ["Space-Opera"]
    (folder / f"{d}.json").write_text(json.dumps(record))
    e = split["dev"][0]
    record = json.loads((folder / f"{e}.json").read_text())
    record["genres"] = ["Talk-Show", "Space-Opera"]
    (folder / f"{e}.json").write_text(json.dumps(record))

    report = check_mmimdb(raw_copy)
    assert report.counts == {"train": 6, "dev": 3, "test": 4}
    assert len(report.errors) == 4, report.errors
    assert _errors_containing(report, f"{a}.jpeg", "poster not found")
    assert _errors_containing(report, f"{b}.jpeg", "cannot be decoded as an image")
    assert _errors_containing(report, f"{c}.json", "not valid JSON")
    assert _errors_containing(report, f"{d}.json", "empty plot")
    assert any("genre 'Space-Opera' (1 movies)" in w for w in report.warnings)
    assert any("1 movies have none of the 23 genres" in w for w in report.warnings)
    # decode=False only checks that posters exist
    quick = check_mmimdb(raw_copy, decode=False)
    assert len(quick.errors) == 3 and not _errors_containing(quick, f"{b}.jpeg")


def test_raw_bad_split_file(raw_copy: Path) -> None:
    split = json.loads((raw_copy / "split.json").read_text())
    split["test"].append(split["dev"][0])
    (raw_copy / "split.json").write_text(json.dumps(split))
    report = check_mmimdb(raw_copy)
    assert report.counts == {}
    assert report.errors == [
        f"{raw_copy / 'split.json'}: imdb id '{split['dev'][0]}' appears twice (dev and test)"
    ]
