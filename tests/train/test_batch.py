"""The global batch: its split over devices, nodes, micro-batches and accumulation, and its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mango.config import TrainerSettings, upgrade_stored
from mango.errors import ConfigError
from mango.train.batch import BatchPlan
from mango.train.run import build_config


@given(
    world=st.sampled_from([(1, 1), (2, 1), (4, 1), (8, 1), (4, 2)]),
    share=st.integers(1, 64),
    cap=st.one_of(st.none(), st.integers(1, 80)),
)
def test_split_multiplies_back_with_the_largest_allowed_micro_batch(world, share, cap):
    devices, nodes = world
    plan = BatchPlan.split(share * devices * nodes, devices, nodes, cap)
    assert plan.nodes * plan.devices * plan.micro_batch * plan.accumulate == plan.global_batch
    assert plan.per_device == share
    limit = share if cap is None else min(cap, share)
    assert plan.micro_batch <= limit
    larger = [m for m in range(plan.micro_batch + 1, limit + 1) if share % m == 0]
    assert not larger, f"micro-batch {plan.micro_batch} is not the largest divisor ≤ {limit}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((16, 4, 1, 2), "global batch 16 = 4 devices × 2 × accumulate 2"),
        ((8, 1, 1, None), "global batch 8 = 1 device × 8 × accumulate 1"),
        ((8, 1, 1, 3), "global batch 8 = 1 device × 2 × accumulate 4"),  # 3 does not divide 8
        ((32, 4, 2, None), "global batch 32 = 2 nodes × 4 devices × 4 × accumulate 1"),
    ],
)
def test_the_printed_line(args, line):
    assert BatchPlan.split(*args).describe() == line


def test_a_batch_the_devices_cannot_share_is_one_config_line():
    with pytest.raises(ConfigError) as error:
        BatchPlan.split(10, devices=4)
    message = str(error.value)
    assert message.startswith("trainer.global_batch: 10 samples cannot be shared equally by 4")
    assert "\n" not in message


def test_train_refuses_an_indivisible_batch_before_writing_anything(tmp_path):
    from mango.train.run import load_config, train

    config = "configs/synthetic-smoke.yaml"
    task, cfg = load_config(config, ["trainer.global_batch=9", "trainer.devices=2"])
    with pytest.raises(ConfigError, match="trainer.global_batch: 9 samples"):
        train(task, cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_old_per_device_field_names_its_replacement():
    raw = {"task": "synthetic", "trainer": {"batch_size": 8}}
    with pytest.raises(ConfigError) as error:
        build_config(raw, "old.yaml")
    message = str(error.value)
    assert message.startswith("old.yaml: trainer.batch_size: replaced by trainer.global_batch")
    assert "\n" not in message


def test_a_stored_per_device_batch_becomes_the_global_batch_it_trained_at():
    raw = {"task": "synthetic", "trainer": {"batch_size": 4, "devices": 2, "num_nodes": 3}}
    upgraded = upgrade_stored(raw)
    assert upgraded["trainer"]["global_batch"] == 24
    assert upgraded["trainer"]["micro_batch"] == 4
    assert "batch_size" not in upgraded["trainer"]
    assert raw["trainer"] == {"batch_size": 4, "devices": 2, "num_nodes": 3}  # a copy
    _, cfg = build_config(upgraded, "stored")
    assert BatchPlan.of(cfg.trainer) == BatchPlan(24, 2, 3, 4, 1)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"global_batch": 16}, 16),
        ({"global_batch": 16, "devices": 4}, 4),
        ({"global_batch": 16, "micro_batch": 3}, 3),  # evaluation needs no divisor
        ({"global_batch": 16, "eval_batch_size": 1}, 1),
    ],
)
def test_evaluation_batch_defaults_to_the_largest_training_forward(fields, expected):
    assert TrainerSettings(**fields).eval_batch == expected


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_states_its_global_batch_and_where_it_comes_from(config):
    lines = config.read_text(encoding="utf-8").splitlines()
    at = [i for i, line in enumerate(lines) if line.strip().startswith("global_batch:")]
    assert len(at) == 1, f"{config.name}: no trainer.global_batch"
    line, before = lines[at[0]], lines[at[0] - 1].strip()
    comment = line.split("#", 1)[1] if "#" in line else before.lstrip("#")
    assert "#" in line or before.startswith("#"), f"{config.name}: the global batch has no comment"
    if not config.stem.endswith("-smoke") and config.stem != "demo":
        # a recipe names its source: the authors' release, a peer's code, or "this project's choice"
        block = "\n".join(lines[max(0, at[0] - 4) : at[0] + 1])
        assert any(s in block for s in ("MANGO", "TokenFusion", "GeminiFusion", "choice")), block
    else:
        assert "smoke" in comment or "demo" in comment
    _, cfg = build_config(yaml.safe_load(config.read_text(encoding="utf-8")), config.name)
    BatchPlan.of(cfg.trainer)  # splits over the devices the config names
