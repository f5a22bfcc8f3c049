"""Every CLI command on every kind of broken Taskonomy folder (issue #9, docs/reliability.md).

Each fault breaks one file of a copy of a tiny good folder. ``mango data check`` must exit 1 with
exactly one ``error:`` line, naming that file, and the summary; ``mango train`` (2 steps), ``mango
eval`` and ``mango predict`` (with a checkpoint trained once on the good folder) must exit 2 with
exactly one stderr line ``mango: error: <file>: <problem>``. Nothing may show a traceback, and a
failed command must leave no checkpoint, no changed metrics JSON and no half-written prediction.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mango.cli import main
from mango.tasks.taskonomy.data import LIST_FILES
from mango.testing.taskonomy import write_taskonomy_fixture

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "taskonomy-smoke.yaml"
#: rgb + occlusion edges -> depth: one 8-bit and two 16-bit domains
PAIR = ["--set", "data.pair=rgb_edge_to_depth"]
DOMAINS = ("rgb", "edge_occlusion", "depth_zbuffer")
SIZE = 32

#: a fault breaks one file of the ``split`` ("train" or "val") of a folder; returns that file
Fault = Callable[[Path, str], Path]


def _last_sample(root: Path, split: str, domain: str) -> Path:
    """The ``domain`` file of the split's last sample (in the second batch of an eval pass)."""
    template = (root / LIST_FILES[split]).read_text().splitlines()[-1]
    return root / template.replace("{domain}", domain)


def missing_file(root: Path, split: str) -> Path:
    victim = _last_sample(root, split, "rgb")
    victim.unlink()
    return victim


def truncated_image(root: Path, split: str) -> Path:
    victim = _last_sample(root, split, "depth_zbuffer")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


def undecodable_image(root: Path, split: str) -> Path:
    victim = _last_sample(root, split, "rgb")
    victim.write_bytes(np.random.default_rng(0).bytes(600))
    return victim


def size_mismatch(root: Path, split: str) -> Path:
    victim = _last_sample(root, split, "edge_occlusion")
    Image.fromarray(np.zeros((SIZE // 2, SIZE // 2), dtype=np.uint16)).save(victim)
    return victim


def eight_bit_depth(root: Path, split: str) -> Path:
    victim = _last_sample(root, split, "depth_zbuffer")
    Image.fromarray(np.full((SIZE, SIZE), 200, dtype=np.uint8)).save(victim)
    return victim


def empty_list(root: Path, split: str) -> Path:
    victim = root / LIST_FILES[split]
    victim.write_text("\n\n", encoding="utf-8")
    return victim


def malformed_list(root: Path, split: str) -> Path:
    victim = root / LIST_FILES[split]
    victim.write_text(victim.read_text() + "not a sample path\n", encoding="utf-8")
    return victim


FAULTS: list[Fault] = [
    missing_file,
    truncated_image,
    undecodable_image,
    size_mismatch,
    eight_bit_depth,
    empty_list,
    malformed_list,
]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train / 3 val samples of three domains at 32 x 32; do not modify."""
    return write_taskonomy_fixture(tmp_path_factory.mktemp("good"), DOMAINS, 4, 3, SIZE)


@pytest.fixture(scope="module")
def checkpoint(good: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run on the good folder (eval batches of 2: the last val sample is in batch 2)."""
    out = tmp_path_factory.mktemp("trained")
    args = ["--config", str(SMOKE), "--data", str(good), "--out", str(out), "--max-steps", "2"]
    assert main(["train", *args, *PAIR, "--set", "trainer.eval_batch_size=2"]) == 0
    return out / "checkpoints" / "last.ckpt"


def _broken(good: Path, tmp_path: Path, fault: Fault, split: str) -> tuple[Path, Path]:
    root = Path(shutil.copytree(good, tmp_path / "data"))
    return root, fault(root, split)


@pytest.mark.parametrize("fault", FAULTS)
def test_data_check_lists_the_bad_file_once(
    fault: Fault, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, victim = _broken(good, tmp_path, fault, "val")
    capsys.readouterr()
    assert main(["data", "check", "--layout", "taskonomy", "--data", str(root)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {victim}: "), lines
    assert all(line.startswith("warning: ") for line in lines if line not in errors), lines
    assert "; 1 error(s), " in captured.out.strip().splitlines()[-1]


@pytest.mark.parametrize("fault", FAULTS)
def test_train_stops_with_one_line_and_no_checkpoint(
    fault: Fault, good: Path, tmp_path: Path, failing
) -> None:
    root, victim = _broken(good, tmp_path, fault, "train")
    out = tmp_path / "run"
    args = ["--config", str(SMOKE), "--data", str(root), "--out", str(out), "--max-steps", "2"]
    failing.capsys.readouterr()
    assert main(["train", *args, *PAIR]) == 2
    failing.one_error_line(victim)
    assert not out.exists()  # a run that failed before its first checkpoint leaves nothing


@pytest.mark.parametrize("fault", FAULTS)
def test_eval_fails_with_one_line_and_keeps_the_old_metrics(
    fault: Fault,
    good: Path,
    checkpoint: Path,
    tmp_path: Path,
    failing,
) -> None:
    root, victim = _broken(good, tmp_path, fault, "val")
    failing.eval_keeps_old_metrics(checkpoint, root, victim)


@pytest.mark.parametrize("fault", FAULTS)
def test_predict_fails_with_one_line_and_writes_no_partial_file(
    fault: Fault,
    good: Path,
    checkpoint: Path,
    tmp_path: Path,
    failing,
) -> None:
    root, victim = _broken(good, tmp_path, fault, "val")
    failing.predict_writes_nothing(checkpoint, root, victim)


def test_predict_on_a_later_bad_sample_writes_nothing(
    good: Path, checkpoint: Path, tmp_path: Path
) -> None:
    root, _ = _broken(good, tmp_path, truncated_image, "val")
    out = tmp_path / "pred"
    args = ["--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out)]
    assert main(["predict", *args]) == 2
    assert not out.exists() or not any(out.iterdir())
