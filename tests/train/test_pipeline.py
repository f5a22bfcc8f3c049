"""train -> eval -> predict on the synthetic task, resume, refusals, bad configs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mango
from mango.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "synthetic-smoke.yaml"
FAST = [
    "--set",
    "data.train_scenes=32",
    "--set",
    "data.val_scenes=8",
    "--set",
    "data.test_scenes=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert (
        main(["train", "--config", str(SMOKE), "--out", str(run), "--max-steps", "20", *FAST]) == 0
    )
    return run


def test_train_writes_checkpoint_config_logs_weights(trained):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 20
    assert checkpoint["mango"]["config"]["task"] == "synthetic"
    assert set(checkpoint["mango"]["versions"]) >= {"mango", "torch", "lightning"}
    assert (trained / "config.yaml").read_text().startswith("task: synthetic")
    log = (trained / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/attention_effect", "val/round_trip_error", "train/attention_strength"} <= set(log)
    weights = load_file(trained / "weights.safetensors")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in weights)


def test_the_checkpoint_records_how_it_was_made_and_info_prints_it(trained, capsys):
    record = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["mango"]["record"]
    split = {
        k: record[k] for k in ("global_batch", "devices", "nodes", "micro_batch", "accumulate")
    }
    assert split == {"global_batch": 8, "devices": 1, "nodes": 1, "micro_batch": 8, "accumulate": 1}
    assert (record["optimizer_steps"], record["samples_seen"], record["seed"]) == (20, 160, 0)
    assert record["precision"] == "32-true" and record["wall_time_s"] > 0
    assert record["mango"] == mango.__version__ and record["torch"] == torch.__version__
    assert record["commit"] is None or len(record["commit"]) == 40  # a checkout's, else none
    assert len(record["starts"]) == 1 and record["starts"][0]["to_step"] == 20
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(trained / "checkpoints" / "last.ckpt")]) == 0
    shown = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert shown["global_batch"] == "8" and shown["samples_seen"] == "160"
    assert shown["precision"] == "32-true" and shown["torch"] == torch.__version__
    assert main(["info", "--checkpoint", str(trained / "checkpoints" / "last.ckpt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == record


def test_eval_and_predict(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert (
        main(
            ["eval", "--checkpoint", str(trained / "checkpoints" / "last.ckpt"), "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert {"miou", "pixel_acc", "mean_acc", "per_class_iou", "bits_per_dim"} <= metrics.keys()
    assert 0 <= metrics["miou"] <= 100 and metrics["samples"] == 8
    assert metrics["protocol"]["name"] == "single-scale"
    assert metrics["protocol"]["window"] == "whole image 32x32"
    # the checkpoint's training record, copied, and the evaluation's own
    stored = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["mango"]
    assert metrics["record"]["training"] == stored["record"]
    evaluation = metrics["record"]["evaluation"]
    assert evaluation["samples"] == 8 and evaluation["wall_time_s"] > 0
    assert evaluation["torch"] == torch.__version__ and evaluation["device_names"]
    assert 0 < metrics["attention_effect"] < 1 and metrics["round_trip_error"] < 1e-5
    (flow,) = metrics["flow_health"].values()
    assert len(flow["layer_effects"]) == 2 * 8  # 2 blocks of 8 ICA layers

    off = tmp_path / "off.json"
    args = ["eval", "--checkpoint", str(trained / "checkpoints" / "last.ckpt"), "--out", str(off)]
    assert main([*args, "--ablate", "attention"]) == 0
    ablated = json.loads(off.read_text())
    assert ablated["ablate"] == "attention" and ablated["attention_effect"] == 0.0
    assert set(metrics) - {"flow_health"} <= set(ablated)
    assert ablated["bits_per_dim"] != metrics["bits_per_dim"]
    assert main([*args, "--ablate", "everything"]) == 2
    assert "--ablate" in capsys.readouterr().err
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(trained / "checkpoints" / "last.ckpt"),
                "--out",
                str(pred),
            ]
        )
        == 0
    )
    assert len(list(pred.glob("test_*_panel.png"))) == 8


def test_refuses_to_overwrite_a_run(trained, capsys):
    before = (trained / "checkpoints" / "last.ckpt").read_bytes()
    code = main(["train", "--config", str(SMOKE), "--out", str(trained), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "already holds a run" in err[0]
    assert (trained / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_refuses_another_architecture(trained, capsys):
    code = main(
        [
            "train",
            "--config",
            str(SMOKE),
            "--out",
            str(trained),
            "--resume",
            *FAST,
            "--set",
            "model.dim=8",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "different architecture" in err[0], err


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.fusoin=mango", "field model.fusoin: unknown key"),
        ("trainer.max_steps=-3", "field trainer.max_steps"),
        ("flow.attention=sparse", "field flow.attention"),
    ],
)
def test_bad_config_is_one_line(override, message, tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE), "--out", str(tmp_path / "r"), "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "weights.safetensors")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    args = [
        "--config",
        str(SMOKE),
        *FAST,
        "--max-steps",
        "40",
        "--set",
        "trainer.steps_per_checkpoint=10",
    ]
    straight = tmp_path / "straight"
    assert main(["train", "--out", str(straight), *args]) == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mango.cli", "train", "--out", str(killed), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    checkpoint = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not checkpoint.exists():
        time.sleep(0.02)  # the first checkpoint appears at step 10, written atomically
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 10 <= step < 40, f"killed too late (step {step}): the test proves nothing"

    assert main(["train", "--out", str(killed), "--resume", *args]) == 0
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_sigint_stops_cleanly_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [
        "--config",
        str(SMOKE),
        *FAST,
        "--max-steps",
        "100000",
        "--set",
        "trainer.steps_per_checkpoint=10",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "mango.cli", "train", "--out", str(run), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background jobs inherit an ignored SIGINT: restore the default, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    checkpoint = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("mango:")]
    assert process.returncode == 130, err[-2000:]
    assert len(lines) == 1 and "continue with --resume" in lines[0], err[-2000:]
    assert torch.load(checkpoint, weights_only=True)["global_step"] >= 10


@pytest.mark.parametrize("command", ["eval", "predict", "train --resume"])
def test_a_checkpoint_carrying_code_is_refused_in_one_line(command, payload, tmp_path, capsys):
    run = tmp_path / "shared-run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "mango": payload}, checkpoint)
    args = {
        "eval": ["eval", "--checkpoint", str(checkpoint)],
        "predict": ["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred")],
        "train --resume": ["train", "--config", str(SMOKE), "--out", str(run), "--resume"],
    }[command]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"mango: error: {checkpoint}: refused: it holds a pickled exec"), err
    assert not payload.marker.exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # no logs, no config


def test_resume_loads_every_checkpoint_weights_only(trained, tmp_path, monkeypatch):
    """mango's check and Lightning's restore both read ``last.ckpt``, both weights-only."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    loads: list[tuple[str, object]] = []
    plain_load = torch.load

    def recording_load(f, *args, **kwargs):
        loads.append((str(f), kwargs.get("weights_only")))
        return plain_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    args = ["--config", str(SMOKE), "--out", str(run), "--resume", "--max-steps", "22", *FAST]
    assert main(["train", *args]) == 0
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert [load for load in loads if load[0] == checkpoint] == [(checkpoint, True)] * 2, loads
    assert all(weights_only is True for _, weights_only in loads), loads


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_keeps_the_last(
    tmp_path, monkeypatch, capsys
):
    """The write of step 4's checkpoint fails: one line naming the file, exit 2, step 2 kept."""
    import errno

    from mango.train.checkpoint import read_checkpoint

    plain_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step", 0) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return plain_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    args = ["train", "--config", str(SMOKE), "--out", str(run), "--max-steps", "6", *FAST]
    assert main([*args, "--set", "trainer.steps_per_checkpoint=2"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mango:")]
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert lines == [
        f"mango: error: {checkpoint}: cannot write (No space left on device); "
        "the previous file is kept"
    ]
    assert read_checkpoint(checkpoint)["global_step"] == 2
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]  # no temp file
    assert (run / "weights.safetensors").is_file()


def test_a_log_that_cannot_be_written_warns_once_and_training_goes_on(
    tmp_path, monkeypatch, capsys
):
    """Only rank 0 writes logs: a full disk there must not stop it alone; the checkpoint, which
    every rank agrees on, is what stops a run (the test above)."""
    import errno

    from lightning.fabric.loggers.csv_logs import _ExperimentWriter

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_ExperimentWriter, "save", full_disk)
    run = tmp_path / "run"
    args = ["train", "--config", str(SMOKE), "--out", str(run), "--max-steps", "4", *FAST]
    assert main([*args, "--set", "trainer.steps_per_checkpoint=2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mango:")]
    assert lines == [
        f"mango: warning: {run / 'logs' / 'version_0' / 'metrics.csv'}: cannot write the log "
        "(No space left on device); training goes on"
    ]
    assert (run / "checkpoints" / "last.ckpt").is_file()
