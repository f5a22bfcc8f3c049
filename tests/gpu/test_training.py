"""GPU training checks (``make gpu-check``): each task's smoke config under bf16 autocast.

Every ``configs/*-smoke.yaml`` trains a few hundred steps on the GPU with
``trainer.precision=bf16-mixed`` (encoders and heads in bf16, the flow in float32) on its
generated fixture, through ``mango train``; ``mango eval`` then reads the checkpoint and reports
finite metrics and, for the flow, a round trip that still inverts. On a machine without MM-IMDb's
offline encoder packages, its config runs on stand-ins (``offline_encoder_overrides``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mango.cli import main
from mango.testing.mmimdb import write_mmimdb_hdf5_fixture
from mango.testing.rgbd import write_nyudv2_fixture, write_sunrgbd_fixture
from mango.testing.taskonomy import write_taskonomy_fixture
from mango.testing.tensors import write_tensors_fixture

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ROOT = Path(__file__).resolve().parents[2]
STEPS = 200

#: each smoke config's data: a fixture writer, or None (the built-in synthetic scenes)
FIXTURES: dict[str, Callable[[Path], Path] | None] = {
    "mmimdb": write_mmimdb_hdf5_fixture,
    "nyudv2": write_nyudv2_fixture,
    "sunrgbd": write_sunrgbd_fixture,
    "synthetic": None,
    "taskonomy": write_taskonomy_fixture,
    "tensors": write_tensors_fixture,
}


def test_every_smoke_config_is_covered():
    smoke = sorted(p.stem.removesuffix("-smoke") for p in (ROOT / "configs").glob("*-smoke.yaml"))
    assert smoke == sorted(FIXTURES)


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_bf16_autocast_training_of_each_smoke_config(
    task: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    writer = FIXTURES[task]
    data = [] if writer is None else ["--data", str(writer(tmp_path / "data"))]
    config = ROOT / "configs" / f"{task}-smoke.yaml"
    run = tmp_path / "run"
    settings = [
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
        f"trainer.steps_per_checkpoint={STEPS}",
    ]
    if task == "mmimdb":  # stand-ins where the offline encoder packages are absent
        settings += request.getfixturevalue("offline_encoder_overrides")
    train = ["train", "--config", str(config), *data, "--out", str(run)]
    sets = [arg for setting in settings for arg in ("--set", setting)]
    assert main([*train, "--max-steps", str(STEPS), *sets]) == 0
    metrics_path = tmp_path / "m.json"
    checkpoint = run / "checkpoints" / "last.ckpt"
    evaluate = ["eval", "--checkpoint", str(checkpoint), *data, "--out", str(metrics_path)]
    assert main([*evaluate, "--set", "trainer.accelerator=gpu"]) == 0
    metrics = json.loads(metrics_path.read_text())
    numbers = [v for v in metrics.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers), metrics
    assert metrics["round_trip_error"] < 1e-3, metrics
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
