"""``mango ablate``: rows, outputs, reuse and resume of finished rows, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mango.ablate import markdown, paired_interval, plan, variants
from mango.cli import main
from mango.train.run import load_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "synthetic-smoke.yaml"
FAST = [
    *("--set", "trainer.max_steps=2", "--set", "trainer.steps_per_checkpoint=2"),
    *("--set", "data.train_scenes=8", "--set", "data.val_scenes=4"),
    *("--set", "data.test_scenes=4", "--set", "trainer.global_batch=4"),
]
ROWS = ["mango", "concat", "single_rgb", "coupling_only"]
FLOW_KEYS = ("attention_effect", "round_trip_error", "bits_per_dim")


def ablate(out: Path, *args: str) -> int:
    return main(["ablate", "--config", str(SMOKE), "--out", str(out), *FAST, *args])


def rows_of(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((out / "ablation.json").read_text())["rows"]}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mango: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablate")
    assert ablate(out, "--only", ",".join(ROWS)) == 0
    return out


def test_one_row_per_requested_variant_with_its_overrides(done: Path) -> None:
    rows = rows_of(done)
    assert list(rows) == ROWS
    assert rows["mango"]["overrides"] == ["model.fusion=mango"]
    assert rows["concat"]["overrides"] == ["model.fusion=concat"]
    assert rows["single_rgb"]["overrides"] == ["model.fusion=single", "model.modalities=[rgb]"]
    assert rows["coupling_only"]["overrides"] == ["model.fusion=mango", "flow.partitions=[]"]
    for row in rows.values():
        assert row["metric"] == "miou" and 0 <= row["value"] <= 100
        assert row["status"] == "trained" and row["train_step_ms"] > 0
    assert rows["single_rgb"]["parameters"] < rows["concat"]["parameters"]
    assert rows["concat"]["parameters"] < rows["mango"]["parameters"]
    stored = yaml.safe_load((done / "runs" / "single_rgb" / "seed0" / "config.yaml").read_text())
    assert stored["model"]["modalities"] == ["rgb"] and stored["trainer"]["max_steps"] == 2
    stored = yaml.safe_load((done / "runs" / "coupling_only" / "seed0" / "config.yaml").read_text())
    assert stored["flow"]["partitions"] == [] and stored["model"]["fusion"] == "mango"


def test_flow_keys_are_numbers_with_a_flow_and_null_without(done: Path) -> None:
    rows = rows_of(done)
    assert all(math.isfinite(rows["mango"][key]) for key in FLOW_KEYS), rows["mango"]
    assert rows["mango"]["attention_effect"] > 0
    coupling_only = rows["coupling_only"]  # a flow, but no ICA layer to have an effect
    assert coupling_only["attention_effect"] is None
    assert math.isfinite(coupling_only["round_trip_error"] + coupling_only["bits_per_dim"])
    for name in ("concat", "single_rgb"):
        assert all(rows[name][key] is None for key in FLOW_KEYS), rows[name]


def test_markdown_names_config_preset_budget_and_every_row(done: Path) -> None:
    text = (done / "ablation.md").read_text()
    assert str(SMOKE) in text.splitlines()[0] and "preset quick" in text.splitlines()[0]
    assert "2 steps at global batch 4" in text
    assert "Every row shares encoders, head, data and budget" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[1:]] == ROWS
    assert "| miou |" in table[0]


def test_rerun_reuses_finished_rows_without_training(
    done: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [*done.glob("runs/*/seed0/row.json"), *done.glob("runs/*/seed0/checkpoints/last.ckpt")]
    before = {p: p.stat().st_mtime_ns for p in files}
    values = {name: row["value"] for name, row in rows_of(done).items()}
    capsys.readouterr()
    assert ablate(done, "--only", ",".join(ROWS)) == 0
    err = capsys.readouterr().err
    assert err.count(": reused ") == len(ROWS) and "training" not in err
    assert {p: p.stat().st_mtime_ns for p in files} == before
    rows = rows_of(done)
    assert {name: row["value"] for name, row in rows.items()} == values
    assert {row["status"] for row in rows.values()} == {"reused"}


def test_row_with_a_checkpoint_but_no_row_json_is_resumed(
    done: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = rows_of(done)["concat"]["value"]
    (done / "runs" / "concat" / "seed0" / "row.json").unlink()
    capsys.readouterr()
    assert ablate(done, "--only", "concat") == 0
    assert "[ablate] 1/1 concat seed 0: resuming at step 2 of 2" in capsys.readouterr().err
    row = rows_of(done)["concat"]
    assert row["status"] == "resumed" and row["value"] == value
    assert row["train_step_ms"] is None  # no step left to train
    assert (done / "runs" / "concat" / "seed0" / "row.json").exists()


def test_a_row_folder_trained_with_another_config_is_refused(
    done: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (done / "ablation.json").read_bytes()
    capsys.readouterr()
    assert ablate(done, "--only", "mango", "--set", "trainer.max_steps=3") == 2
    assert "holds row mango trained with another config" in one_error_line(capsys)
    assert (done / "ablation.json").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--only", "mango,nope"],
            "--only: unknown row 'nope'; choose from mango, concat, single_rgb",
        ),
        (["--preset", "full"], "--preset: expected one of quick, paper, baselines, got 'full'"),
        (["--seeds", "0"], "--seeds: expected a count >= 1 or a comma-separated list"),
        (["--seeds", "1,1"], "--seeds: expected distinct seeds"),
        (["--config", "missing.yaml"], "missing.yaml: config file not found"),
        (["--set", "flow.blocks=0"], "field flow.blocks"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert ablate(tmp_path / "out", *args) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_every_row_is_validated_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one modality: the single_rgb row is fine, the fused rows are not (checked by the model)
    assert ablate(tmp_path / "out", "--set", "model.modalities=[rgb]") == 2
    assert "needs >= 2 modalities" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_rows_a_task_cannot_express_are_skipped_with_a_note() -> None:
    _, mmimdb = load_config(ROOT / "configs" / "mmimdb-smoke.yaml")
    rows, notes = variants(mmimdb)
    assert "concat" in [r.name for r in rows] and not any(r.name.startswith("single") for r in rows)
    assert notes == [
        "single_*: task mmimdb has no single fusion (mango, concat, transformer, "
        "cross_attention, tokenfusion, geminifusion, cmx, late, image, text)"
    ]
    _, taskonomy = load_config(ROOT / "configs" / "taskonomy-smoke.yaml")
    rows, notes = variants(taskonomy)
    assert len(rows) == 9 and notes == [
        "single_*: task taskonomy has no model.modalities to choose one from"
    ]
    summary = {
        "config": "c.yaml",
        "task": "mmimdb",
        "preset": "quick",
        "overrides": [],
        "metric": "f1_micro",
        "split": "test",
        "budget": {"max_steps": 1, "global_batch": 1, "seed": 0},
        "rows": [],
        "skipped": notes,
    }
    assert markdown(summary).endswith(f"Skipped: {notes[0]}.\n")


def test_paper_preset_uses_twelve_blocks_except_in_the_blocks_rows(tmp_path: Path) -> None:
    rows, _ = plan(SMOKE, tmp_path, preset="paper", only="mango,blocks_6,coupling_only")
    assert [(r.variant.name, r.cfg.flow.blocks) for r in rows] == [
        ("mango", 12),
        ("blocks_6", 6),
        ("coupling_only", 12),
    ]
    quick, _ = plan(SMOKE, tmp_path, only="mango")
    assert quick[0].cfg.flow.blocks == 2


def test_baselines_preset_lists_every_applicable_fusion_and_the_controls() -> None:
    _, synthetic = load_config(SMOKE)
    rows, notes = variants(synthetic, "baselines", ["rgb", "depth"])
    assert [r.name for r in rows] == [
        "mango",
        "coupling_only",
        "concat",
        "transformer",
        "cross_attention",
        "tokenfusion",
        "geminifusion",
        "cmx",
        "control_noise",
        "single_rgb",
        "single_depth",
    ]
    by_name = {r.name: r.overrides for r in rows}
    assert by_name["control_noise"] == ("model.fusion=mango", "model.noise=[depth]")
    assert by_name["cmx"] == ("model.fusion=cmx",)
    assert notes == []
    _, tensors = load_config(ROOT / "configs" / "tensors-smoke.yaml")
    names = [r.name for r in variants(tensors, "baselines", ["a", "b"])[0]]
    assert "late" in names and names.index("late") == names.index("concat") + 1


def test_aligned_baselines_are_skipped_where_token_counts_differ(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["model"]["fuse_stages"] = [2]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    rows, notes = plan(config, tmp_path / "out", preset="baselines", only="mango,cmx")
    assert [r.variant.name for r in rows] == ["mango", "cmx"] and notes == []
    _, mmimdb = load_config(ROOT / "configs" / "mmimdb-smoke.yaml")
    rows, _ = variants(mmimdb, "baselines", ["image", "text"])
    assert "tokenfusion" in [r.name for r in rows]  # listed; plan() skips it with a note


def test_paired_interval_is_the_student_t_interval_of_the_differences() -> None:
    values, reference = [88.1, 87.2, 88.9, 87.5], [87.0, 87.4, 88.0, 86.1]
    diffs = np.subtract(values, reference)
    half = 3.182446305284263 * diffs.std(ddof=1) / 2  # t_{0.975, 3}, n = 4
    d = paired_interval(values, reference)
    assert d["n"] == 4 and d["mean"] == pytest.approx(diffs.mean())
    assert (d["low"], d["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert paired_interval([1.0], [0.0]) == {"mean": 1.0, "low": None, "high": None, "n": 1}


def test_seeds_train_every_row_once_each_and_pair_the_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rows = "mango,transformer,control_noise"
    assert ablate(out, "--preset", "baselines", "--only", rows, "--seeds", "3,5") == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["seeds"] == [3, 5] and len(summary["runs"]) == 6
    for name in rows.split(","):
        for seed in (3, 5):
            stored = yaml.safe_load(
                (out / "runs" / name / f"seed{seed}" / "config.yaml").read_text()
            )
            assert stored["trainer"]["seed"] == seed
    # every run carries how it was made: its checkpoint's training record
    assert [(r["record"]["seed"], r["record"]["global_batch"]) for r in summary["runs"]] == [
        (s, 4) for _ in rows.split(",") for s in (3, 5)
    ]
    assert summary["record"]["torch"] and summary["record"]["wall_time_s"] > 0
    by_name = {r["name"]: r for r in summary["rows"]}
    mango, transformer = by_name["mango"], by_name["transformer"]
    assert mango["seeds"] == [3, 5] and mango["difference"] is None
    assert mango["value"] == pytest.approx(np.mean(mango["values"]))
    assert mango["sd"] == pytest.approx(np.std(mango["values"], ddof=1))
    diffs = np.subtract(transformer["values"], mango["values"])
    assert transformer["difference"]["mean"] == pytest.approx(diffs.mean())
    assert transformer["difference"]["low"] < diffs.mean() < transformer["difference"]["high"]
    ratio = transformer["fusion_parameters"] / mango["fusion_parameters"]
    assert abs(ratio - 1) <= 0.1, ratio  # matched to the flow
    noise = yaml.safe_load((out / "runs" / "control_noise" / "seed3" / "config.yaml").read_text())
    assert noise["model"]["noise"] == ["depth"]
    table = (out / "ablation.md").read_text()
    assert "seeds 3, 5" in table and "Δ vs mango [95 % CI]" in table
