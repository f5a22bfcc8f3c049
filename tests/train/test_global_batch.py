"""One recipe, the same weights on any split of its global batch (float64, CPU).

The reference trains the ``tensors`` smoke model (a MANGO flow; no dropout, no batch statistics)
for 6 optimizer steps at a global batch of 8 in one process. Gradient accumulation (micro-batch 2
× 4), a 2-process gloo DDP run (micro-batch 4 per process, through ``mango train --devices 2
--strategy ddp``) and a run stopped at step 3 and resumed on 2 processes must all reach its
weights: the same samples per optimizer step (:mod:`mango.train.data`), the same ActNorm
initialisation (:meth:`mango.train.module.MangoModule.on_train_start`) and the same poly schedule
counted in optimizer steps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from mango.errors import ConfigError
from mango.testing.tensors import write_tensors_fixture
from mango.train.checkpoint import read_checkpoint
from mango.train.run import CHECKPOINT, load_config, train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tensors-smoke.yaml"
RECIPE = [
    "model.dropout=0",
    "trainer.precision=64-true",
    "trainer.global_batch=8",
    "trainer.max_steps=6",
    "trainer.steps_per_checkpoint=3",
    "optim.schedule=poly",
    "optim.warmup_steps=2",
    "optim.lr=3.0e-3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tensors_fixture(tmp_path_factory.mktemp("tensors"), sizes=(40, 8, 8))


def _train(data: Path, out: Path, *extra: str, callbacks=()) -> Path:
    task, cfg = load_config(CONFIG, [*RECIPE, *extra], data)
    train(task, cfg, out, progress=False, callbacks=callbacks)
    return out / CHECKPOINT


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The one-process run at batch 8: its checkpoint and its starting weights."""
    out = tmp_path_factory.mktemp("reference")
    task, cfg = load_config(CONFIG, RECIPE, data)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    start = {k: v.double() for k, v in task.build_model(cfg).state_dict().items()}
    return {"checkpoint": read_checkpoint(_train(data, out / "run")), "start": start}


def _assert_same_weights(checkpoint: Path, reference: dict) -> None:
    got, want = read_checkpoint(checkpoint)["state_dict"], reference["checkpoint"]["state_dict"]
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-11, msg=key)
    moved = [
        k
        for k, v in want.items()
        if v.is_floating_point()
        and k.removeprefix("model.") in reference["start"]
        and (v - reference["start"][k.removeprefix("model.")]).abs().max() > 1e-4
    ]
    assert len(moved) > len(want) // 2, "training barely changed the weights: a vacuous match"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mango_on_two_processes(*args: str) -> subprocess.CompletedProcess[str]:
    """``mango train ... --devices 2 --strategy ddp`` on the CPU (gloo); Lightning re-runs the
    same command for rank 1."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "mango.cli", "train", *args, "--devices", "2"]
    command += ["--strategy", "ddp", "--set", "trainer.accelerator=cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_gradient_accumulation_reaches_the_weights_of_the_whole_batch(data, reference, tmp_path):
    checkpoint = _train(data, tmp_path / "run", "trainer.micro_batch=2")
    _assert_same_weights(checkpoint, reference)
    record = read_checkpoint(checkpoint)["mango"]["record"]
    assert (record["micro_batch"], record["accumulate"], record["global_batch"]) == (2, 4, 8)
    assert record["samples_seen"] == 48


def test_two_process_ddp_reaches_the_weights_of_one_process(data, reference, tmp_path):
    out = tmp_path / "run"
    sets = [a for s in RECIPE for a in ("--set", s)]
    result = _mango_on_two_processes(
        "--config", str(CONFIG), "--data", str(data), "--out", str(out), *sets
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("global batch")]
    assert lines == ["global batch 8 = 2 devices × 4 × accumulate 1"]  # once: rank 0 prints it
    _assert_same_weights(out / CHECKPOINT, reference)
    record = read_checkpoint(out / CHECKPOINT)["mango"]["record"]
    assert (record["devices"], record["micro_batch"], record["global_batch"]) == (2, 4, 8)
    assert len(record["device_names"]) == 2


class StopAt(pl.Callback):
    """Stops a run after optimizer step ``step``, as a preempted job would (its schedule keeps
    ``max_steps``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_resuming_on_two_processes_keeps_batch_schedule_and_data_order(data, reference, tmp_path):
    out = tmp_path / "run"
    _train(data, out, callbacks=[StopAt(3)])
    assert read_checkpoint(out / CHECKPOINT)["global_step"] == 3
    # --config defaults to OUT/config.yaml, the recipe of the run being resumed
    result = _mango_on_two_processes("--resume", "--out", str(out), "--data", str(data))
    assert "global batch 8 = 2 devices × 4 × accumulate 1" in result.stdout
    _assert_same_weights(out / CHECKPOINT, reference)
    starts = read_checkpoint(out / CHECKPOINT)["mango"]["record"]["starts"]
    assert [(s["from_step"], s["to_step"], s["devices"]) for s in starts] == [(0, 3, 1), (3, 6, 2)]


def test_resuming_at_another_global_batch_is_one_config_line(data, tmp_path):
    out = tmp_path / "run"
    _train(data, out, "trainer.max_steps=3")
    task, cfg = load_config(CONFIG, [*RECIPE, "trainer.global_batch=16"], data)
    with pytest.raises(ConfigError) as error:
        train(task, cfg, out, resume=True, progress=False)
    assert str(error.value).startswith(
        f"trainer.global_batch: {out / CHECKPOINT} was trained at a global batch of 8, not 16"
    )
    assert read_checkpoint(out / CHECKPOINT)["global_step"] == 3  # the run is untouched
