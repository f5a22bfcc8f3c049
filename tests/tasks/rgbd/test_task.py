"""NYUDv2 and SUN RGB-D end to end through the CLI: train -> eval -> predict on generated fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mango.cli import main
from mango.testing.rgbd import write_nyudv2_fixture, write_sunrgbd_fixture

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = {"nyudv2": write_nyudv2_fixture, "sunrgbd": write_sunrgbd_fixture}


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(layout: str, tmp_path: Path, steps: int) -> tuple[Path, Path]:
    """Write a fixture of ``layout`` and train its smoke config; return (data, checkpoint)."""
    data = FIXTURES[layout](tmp_path / "data")
    run = tmp_path / "run"
    config = ROOT / "configs" / f"{layout}-smoke.yaml"
    args = ["--config", str(config), "--data", str(data), "--out", str(run)]
    assert main(["train", *args, "--max-steps", str(steps)]) == 0
    return data, run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("layout", FIXTURES)
def test_train_eval_predict_round(layout, tmp_path):
    data, checkpoint = _trained(layout, tmp_path, steps=20)
    metrics_path = tmp_path / "m.json"
    args = ["--checkpoint", str(checkpoint), "--data", str(data)]
    assert main(["eval", *args, "--split", "test", "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert {"pixel_acc", "mean_acc", "miou", "per_class_iou"} <= metrics.keys()
    assert metrics["protocol"]["name"] == "single-scale"
    assert metrics["protocol"]["window"] == "sliding 64x64, stride 0.667 of the window"
    assert all(0 <= metrics[k] <= 100 for k in ("pixel_acc", "mean_acc", "miou"))
    stored = torch.load(checkpoint, weights_only=True)["mango"]["config"]
    assert stored["data"]["depth"]["layout"] == layout  # the depth normalisation is recorded
    assert stored["data"]["eval_scales"] == [1.0]
    pred = tmp_path / "pred"
    assert main(["predict", *args, "--out", str(pred)]) == 0
    assert len(list(pred.glob("*_panel.png"))) == 3  # the fixtures' 3 test images


def test_multiscale_flip_eval_records_and_runs(tmp_path):
    data, checkpoint = _trained("nyudv2", tmp_path, steps=2)
    out = tmp_path / "ms.json"
    overrides = ["--set", "data.eval_scales=[0.75,1.0,1.25]", "--set", "data.eval_flip=true"]
    args = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
    assert main(["eval", *args, *overrides]) == 0
    metrics = json.loads(out.read_text())
    protocol = metrics["protocol"]
    assert protocol["name"] == "multi-scale (0.75, 1, 1.25) + flip"
    assert protocol["scales"] == [0.75, 1.0, 1.25] and protocol["flip"] is True


def test_data_check_cli_names_each_bad_file(tmp_path, capsys):
    data = write_nyudv2_fixture(tmp_path / "data")
    victim = sorted((data / "depth").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated PNG
    code = main(["data", "check", "--layout", "nyudv2", "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and victim.name in errors[0]


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_on_a_broken_dataset_give_one_line(command, tmp_path, capsys):
    data, checkpoint = _trained("nyudv2", tmp_path, steps=2)
    victim = sorted((data / "rgb").glob("*.png"))[-1]
    victim.unlink()
    capsys.readouterr()
    args = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "o")]
    code = main([command, *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and victim.name in err[0], err
