"""The ``tensors`` task end to end through the CLI: data check, train, eval, predict, the
baselines selected by ``model.fusion`` alone, standardisation saved with the checkpoint, and
one-line errors for bad configs and data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mango.cli import main
from mango.tasks.tensors.data import read_split, split_path
from mango.tasks.tensors.task import PREDICTIONS_FILE
from mango.testing.tensors import write_npz
from mango.train.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "tensors-smoke.yaml"
HEALTH = ("attention_effect", "round_trip_error", "bits_per_dim", "flow_health")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is as fast


def _train(data: Path, out: Path, *settings: str, steps: int = 20) -> Path:
    sets = [item for s in settings for item in ("--set", s)]
    args = ["train", "--config", str(SMOKE), "--data", str(data), "--out", str(out), *sets]
    assert main([*args, "--max-steps", str(steps)]) == 0
    return out / "checkpoints" / "last.ckpt"


def _eval(checkpoint: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def run(multiclass_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-step MANGO run on the multi-class fixture, then eval and predict via the CLI."""
    out = tmp_path_factory.mktemp("tensors_run")
    checkpoint = _train(multiclass_root, out)
    _eval(checkpoint, out / "m.json")
    args = ["predict", "--checkpoint", str(checkpoint), "--out", str(out / "pred")]
    assert main(args) == 0
    return out


def test_data_check_cli(
    multiclass_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["data", "check", "--layout", "tensors", "--data", str(multiclass_root)]) == 0
    assert "tensors at" in capsys.readouterr().out
    (tmp_path / "train.npz").write_bytes(b"junk")
    assert main(["data", "check", "--layout", "tensors", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'train.npz'}: not a readable .npz archive" in err


def test_eval_reports_multiclass_scores_and_flow_health(run: Path) -> None:
    metrics = json.loads((run / "m.json").read_text())
    assert 0 <= metrics["accuracy"] <= 100 and 0 <= metrics["f1_macro"] <= 100
    assert list(metrics["per_class_f1"]) == ["0", "1", "2", "3"]
    for key in HEALTH:
        assert key in metrics
    assert metrics["round_trip_error"] < 1e-4 and math.isfinite(metrics["bits_per_dim"])
    assert metrics["target"] == "multiclass" and metrics["fusion"] == "mango"
    assert metrics["samples"] == 32


def test_predictions_agree_with_eval(run: Path, multiclass_root: Path) -> None:
    records = [json.loads(x) for x in (run / "pred" / PREDICTIONS_FILE).read_text().splitlines()]
    test = read_split(multiclass_root, "test")
    assert [r["id"] for r in records] == test.ids
    for r in records:
        assert r["class"] == max(r["probabilities"], key=r["probabilities"].get)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert [r["true_class"] for r in records] == [str(v) for v in test.label]
    accuracy = 100 * np.mean([r["class"] == r["true_class"] for r in records])
    assert json.loads((run / "m.json").read_text())["accuracy"] == pytest.approx(accuracy)


def test_stored_config_records_resolved_data_fields(run: Path) -> None:
    config = read_checkpoint(run / "checkpoints" / "last.ckpt")["mango"]["config"]
    assert config["data"]["modalities"] == ["a", "b"]
    assert config["data"]["target"] == "multiclass" and config["data"]["classes"] == 4


def test_standardisation_comes_from_train_and_is_saved(run: Path, tmp_path: Path) -> None:
    """The checkpoint holds train-portion statistics; eval uses them even if train.npz changes."""
    state = read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    data = Path(
        read_checkpoint(run / "checkpoints" / "last.ckpt")["mango"]["config"]["data"]["root"]
    )
    train = read_split(data, "train")
    held = 10  # round(96 * 0.1) samples held out for validation (no val.npz in this fixture)
    order = np.random.default_rng(0).permutation(96)
    rows = sorted(order[held:].tolist())
    expected = train.arrays["b"][rows].astype(np.float64).mean(0)
    np.testing.assert_allclose(state["model.standardize.b.mean"].numpy(), expected, rtol=1e-5)
    expected = train.arrays["a"][rows].reshape(-1, 5).astype(np.float64).std(0)
    np.testing.assert_allclose(state["model.standardize.a.std"].numpy(), expected, rtol=1e-5)
    copy = tmp_path / "data"
    copy.mkdir()
    for split in ("train", "test"):
        (copy / f"{split}.npz").write_bytes(split_path(data, split).read_bytes())
    arrays = {"a": train.arrays["a"] * 10 + 3, "b": train.arrays["b"] - 5, "label": train.label}
    write_npz(copy / "train.npz", arrays)
    checkpoint = run / "checkpoints" / "last.ckpt"
    moved = _eval(checkpoint, tmp_path / "m.json", "--data", str(copy))
    original = json.loads((run / "m.json").read_text())
    assert moved["accuracy"] == original["accuracy"]
    assert moved["bits_per_dim"] == pytest.approx(original["bits_per_dim"], rel=1e-6)


@pytest.mark.parametrize(
    ("settings", "absent"),
    [
        (("model.fusion=concat",), "model.fusion.flow."),
        (("model.fusion=late",), "model.head."),
        (("model.fusion=single", "model.modalities=[b]"), "model.embed.a."),
    ],
)
def test_baselines_by_the_fusion_switch_alone(
    multiclass_root: Path, tmp_path: Path, settings: tuple[str, ...], absent: str
) -> None:
    checkpoint = _train(multiclass_root, tmp_path / "run", *settings, steps=5)
    metrics = _eval(checkpoint, tmp_path / "m.json")
    assert 0 <= metrics["accuracy"] <= 100 and "attention_effect" not in metrics
    state = read_checkpoint(checkpoint)["state_dict"]
    assert not any(key.startswith(absent) for key in state)
    assert "model.standardize.b.mean" in state


def test_multilabel_scores_and_predictions(multilabel_root: Path, tmp_path: Path) -> None:
    checkpoint = _train(multilabel_root, tmp_path / "run", steps=10)
    metrics = _eval(checkpoint, tmp_path / "m.json", "--split", "val")
    for key in ("f1_micro", "f1_macro", "f1_samples"):
        assert 0 <= metrics[key] <= 100
    assert list(metrics["per_class_f1"]) == ["0", "1", "2"] and metrics["samples"] == 24
    assert metrics["target"] == "multilabel" and metrics["threshold"] == 0.5
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p")]) == 0
    records = [json.loads(x) for x in (tmp_path / "p" / PREDICTIONS_FILE).read_text().splitlines()]
    assert len(records) == 32
    for r in records:
        assert r["labels"] == [k for k, p in r["probabilities"].items() if p > 0.5]
        assert set(r["true_labels"]) <= {"0", "1", "2"}


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (("model.fusion=single",), "model.modalities: fusion 'single' takes one modality"),
        (("model.modalities=[a, c]",), "model.modalities: 'c' is not one of data.modalities"),
        (("data.tokens={b: 1}",), "'b' has 1 (give it more tokens with data.tokens)"),
        (("data.modalities=[a, audio]",), "modality 'audio' named in data.modalities"),
        (("data.class_names=[x, y]",), "data.class_names: 2 names for 4 classes"),
        (("data.classes=3",), "holds class 3, outside 0..2"),
    ],
)
def test_bad_settings_are_one_line(
    multiclass_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    settings: tuple[str, ...],
    words: str,
) -> None:
    sets = [item for s in settings for item in ("--set", s)]
    args = ["train", "--config", str(SMOKE), "--data", str(multiclass_root)]
    assert main([*args, "--out", str(tmp_path / "run"), *sets]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_broken_test_file_keeps_earlier_outputs(
    run: Path, multiclass_root: Path, tmp_path: Path, failing: Any
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.npz").write_bytes(split_path(multiclass_root, "train").read_bytes())
    test = read_split(multiclass_root, "test")
    arrays = {"a": test.arrays["a"], "b": test.arrays["b"][:, :6], "label": test.label}
    victim = write_npz(root / "test.npz", arrays)
    checkpoint = run / "checkpoints" / "last.ckpt"
    failing.eval_keeps_old_metrics(checkpoint, root, victim)
    failing.predict_writes_nothing(checkpoint, root, victim)


@pytest.mark.parametrize("fill", ["zero", "mean", "impute"])
def test_eval_and_predict_with_a_modality_absent(run: Path, tmp_path: Path, fill: str) -> None:
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    flags = ["--missing", "b", "--missing-rate", "0.25", "--fill", fill]
    metrics = _eval(Path(checkpoint), tmp_path / "m.json", *flags)
    assert metrics["missing"] == ["b"] and metrics["fill"] == fill
    assert metrics.get("impute_samples", 0) == (8 if fill == "impute" else 0)
    assert main(["predict", "--checkpoint", checkpoint, "--out", str(tmp_path / "p"), *flags]) == 0
    assert len((tmp_path / "p" / PREDICTIONS_FILE).read_text().splitlines()) == 32
