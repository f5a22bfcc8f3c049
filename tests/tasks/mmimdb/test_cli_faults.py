"""Every CLI command on every kind of broken MM-IMDb folder (issue #9, docs/reliability.md).

Each fault breaks one file of a copy of a tiny good folder (raw or HDF5 release).
``mango data check`` must exit 1 with exactly one ``error:`` line naming that file, and the
summary; ``mango train`` (2 steps), ``mango eval`` and ``mango predict`` (with a checkpoint trained
once on the good raw folder) must exit 2 with exactly one stderr line ``mango: error: <file>:
<problem>``. Nothing may show a traceback, and a failed command must leave no checkpoint, no
changed metrics JSON and no half-written prediction file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mango.cli import main
from mango.tasks.mmimdb.genres import SPLIT_SIZES
from mango.tasks.mmimdb.readers import HDF5_FILE, METADATA_FILE, RAW_FOLDER, SPLIT_FILE
from mango.tasks.mmimdb.task import PREDICTIONS_FILE
from mango.testing.mmimdb import (
    write_mmimdb_hdf5_fixture,
    write_mmimdb_raw_fixture,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "mmimdb-smoke.yaml"
SIZES = (6, 3, 4)  # train, dev, test movies

#: a fault breaks one file of a folder for ``split`` ("train" or "test"); returns that file
Fault = Callable[[Path, str], Path]


def _last_movie(root: Path, split: str) -> str:
    """The imdb id of the split's last movie (in the second batch of an eval pass)."""
    return json.loads((root / SPLIT_FILE).read_text())[split][-1]


def _last_row(split: str) -> int:
    """The HDF5 row of the split's last movie (the fixture stores train, dev, test in order)."""
    stops = dict(zip(SPLIT_SIZES, np.cumsum(SIZES), strict=True))
    return int(stops[split]) - 1


# raw release: dataset/<id>.json, dataset/<id>.jpeg, split.json


def missing_movie_json(root: Path, split: str) -> Path:
    victim = root / RAW_FOLDER / f"{_last_movie(root, split)}.json"
    victim.unlink()
    return victim


def missing_poster(root: Path, split: str) -> Path:
    victim = root / RAW_FOLDER / f"{_last_movie(root, split)}.jpeg"
    victim.unlink()
    return victim


def truncated_poster(root: Path, split: str) -> Path:
    victim = root / RAW_FOLDER / f"{_last_movie(root, split)}.jpeg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


def undecodable_poster(root: Path, split: str) -> Path:
    victim = root / RAW_FOLDER / f"{_last_movie(root, split)}.jpeg"
    victim.write_bytes(np.random.default_rng(0).bytes(600))
    return victim


def empty_plot(root: Path, split: str) -> Path:
    victim = root / RAW_FOLDER / f"{_last_movie(root, split)}.json"
    record = json.loads(victim.read_text())
    record["plot"] = []
    victim.write_text(json.dumps(record))
    return victim


def empty_split_file(root: Path, split: str) -> Path:
    victim = root / SPLIT_FILE
    victim.write_text("")
    return victim


def empty_split(root: Path, split: str) -> Path:
    victim = root / SPLIT_FILE
    table = json.loads(victim.read_text())
    table[split] = []
    victim.write_text(json.dumps(table))
    return victim


def malformed_split_file(root: Path, split: str) -> Path:
    victim = root / SPLIT_FILE
    text = victim.read_text()
    victim.write_text(text[: len(text) // 2])
    return victim


# HDF5 release: multimodal_imdb.hdf5 + metadata.npy


def wrong_hdf5_key(root: Path, split: str) -> Path:
    victim = root / HDF5_FILE
    with h5py.File(victim, "r+") as file:
        file.move("images", "posters")
    return victim


def wrong_hdf5_dtype(root: Path, split: str) -> Path:
    victim = root / HDF5_FILE
    with h5py.File(victim, "r+") as file:
        images = file["images"][()]
        del file["images"]
        file.create_dataset("images", data=images.astype(np.float32))
    return victim


def truncated_hdf5(root: Path, split: str) -> Path:
    victim = root / HDF5_FILE
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


def missing_metadata(root: Path, split: str) -> Path:
    victim = root / METADATA_FILE
    victim.unlink()
    return victim


def empty_hdf5_plot(root: Path, split: str) -> Path:
    victim = root / HDF5_FILE
    with h5py.File(victim, "r+") as file:
        file["sequences"][_last_row(split)] = np.array([], dtype=np.int32)
    return victim


def empty_hdf5_split(root: Path, split: str) -> Path:
    victim = root / HDF5_FILE
    with h5py.File(victim, "r+") as file:
        table = file.attrs["split"]
        rows = table["split"] == split.encode()
        table["start"][rows] = table["stop"][rows]
        file.attrs["split"] = table
    return victim


RAW_FAULTS = [
    missing_movie_json,
    missing_poster,
    truncated_poster,
    undecodable_poster,
    empty_plot,
    empty_split_file,
    empty_split,
    malformed_split_file,
]
HDF5_FAULTS = [
    wrong_hdf5_key,
    wrong_hdf5_dtype,
    truncated_hdf5,
    missing_metadata,
    empty_hdf5_plot,
    empty_hdf5_split,
]
FAULTS = [pytest.param(f, "raw", id=f.__name__) for f in RAW_FAULTS] + [
    pytest.param(f, "hdf5", id=f.__name__) for f in HDF5_FAULTS
]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good folders of both formats (the same movies); do not modify."""
    return {
        "raw": write_mmimdb_raw_fixture(tmp_path_factory.mktemp("good_raw"), SIZES),
        "hdf5": write_mmimdb_hdf5_fixture(tmp_path_factory.mktemp("good_hdf5"), SIZES),
    }


@pytest.fixture(scope="module")
def checkpoint(good: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run on the good raw folder; eval batches of 2 put the last test movie in batch 2."""
    out = tmp_path_factory.mktemp("trained")
    args = ["--config", str(SMOKE), "--data", str(good["raw"]), "--out", str(out)]
    assert main(["train", *args, "--max-steps", "2", "--set", "trainer.eval_batch_size=2"]) == 0
    return out / "checkpoints" / "last.ckpt"


def _broken(
    good: dict[str, Path], layout: str, tmp_path: Path, fault: Fault, split: str
) -> tuple[Path, Path]:
    root = Path(shutil.copytree(good[layout], tmp_path / "data"))
    return root, fault(root, split)


@pytest.mark.parametrize(("fault", "layout"), FAULTS)
def test_data_check_lists_the_bad_file_once(
    fault: Fault,
    layout: str,
    good: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, victim = _broken(good, layout, tmp_path, fault, "test")
    capsys.readouterr()
    code = main(["data", "check", "--layout", "mmimdb", "--data", str(root)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: {victim}"), lines
    assert all(line.startswith("warning: ") for line in lines if line not in errors), lines
    assert "; 1 error(s), " in captured.out.strip().splitlines()[-1]


@pytest.mark.parametrize(("fault", "layout"), FAULTS)
def test_train_stops_with_one_line_and_no_checkpoint(
    fault: Fault,
    layout: str,
    good: dict[str, Path],
    tmp_path: Path,
    failing,
) -> None:
    root, victim = _broken(good, layout, tmp_path, fault, "train")
    out = tmp_path / "run"
    args = ["--config", str(SMOKE), "--data", str(root), "--out", str(out), "--max-steps", "2"]
    failing.capsys.readouterr()
    assert main(["train", *args]) == 2
    failing.one_error_line(victim)
    assert not out.exists()  # a run that failed before its first checkpoint leaves nothing


@pytest.mark.parametrize(("fault", "layout"), FAULTS)
def test_eval_fails_with_one_line_and_keeps_the_old_metrics(
    fault: Fault,
    layout: str,
    good: dict[str, Path],
    checkpoint: Path,
    tmp_path: Path,
    failing,
) -> None:
    root, victim = _broken(good, layout, tmp_path, fault, "test")
    failing.eval_keeps_old_metrics(checkpoint, root, victim)


@pytest.mark.parametrize(("fault", "layout"), FAULTS)
def test_predict_fails_with_one_line_and_writes_no_partial_file(
    fault: Fault,
    layout: str,
    good: dict[str, Path],
    checkpoint: Path,
    tmp_path: Path,
    failing,
) -> None:
    root, victim = _broken(good, layout, tmp_path, fault, "test")
    failing.predict_writes_nothing(checkpoint, root, victim)


def test_predict_on_a_later_bad_movie_keeps_the_old_predictions(
    good: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    root, _ = _broken(good, "raw", tmp_path, truncated_poster, "test")
    out = tmp_path / "pred"
    out.mkdir()
    (out / PREDICTIONS_FILE).write_text('{"id": "earlier"}\n')
    args = ["--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out)]
    assert main(["predict", *args]) == 2
    assert (out / PREDICTIONS_FILE).read_text() == '{"id": "earlier"}\n'


@pytest.mark.parametrize(
    ("command", "code", "prefix"),
    [
        (["data", "check", "--layout", "mmimdb"], 1, "error: "),
        (["train", "--config", str(SMOKE), "--out", "OUT"], 2, "mango: error: "),
        (["eval", "--checkpoint", "CKPT"], 2, "mango: error: "),
        (["predict", "--checkpoint", "CKPT", "--out", "OUT"], 2, "mango: error: "),
    ],
    ids=["data-check", "train", "eval", "predict"],
)
def test_pickled_code_in_metadata_never_runs(
    command: list[str],
    code: int,
    prefix: str,
    good: dict[str, Path],
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    payload,
) -> None:
    root = Path(shutil.copytree(good["hdf5"], tmp_path / "data"))
    victim = root / METADATA_FILE
    np.save(victim, {"ix_to_word": {0: "_UNK_"}, "extra": payload}, allow_pickle=True)
    given = {"CKPT": str(checkpoint), "OUT": str(tmp_path / "out")}
    capsys.readouterr()
    assert main([*(given.get(word, word) for word in command), "--data", str(root)]) == code
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prefix}{victim}: refused: it holds a pickled builtins.exec")
    assert not payload.marker.exists()
