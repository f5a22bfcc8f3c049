"""``mango demo`` end to end at a tiny size: the seven entries, the report and its figures."""

from __future__ import annotations

import json
from pathlib import Path

from mango.demo.report import _missing_section
from mango.demo.run import run_demo
from mango.demo.spec import ENTRIES, MISSING_DEPTH

TINY = [
    "trainer.max_steps=4",
    "trainer.steps_per_checkpoint=2",
    "trainer.global_batch=4",
    "data.train_scenes=16",
    "data.val_scenes=4",
    "data.test_scenes=4",
    "data.size=32",
    "model.encoder=conv-tiny",
    "model.dim=8",
    "model.head_dim=16",
    "flow.blocks=1",
]


def test_demo_writes_seven_entries_and_a_report(tmp_path):
    summary = run_demo(tmp_path, quick=True, progress=False, overrides=TINY)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == [*ENTRIES, "record"]
    runs = metrics.pop("record")["runs"]  # how each model was made: its checkpoint's record
    assert list(runs) == ["fusion", "concat", "transformer", "rgb_only", "depth_only"]
    for record in runs.values():
        assert record["global_batch"] == 4 and record["optimizer_steps"] == 4
        assert record["samples_seen"] == 16
    for name, entry in metrics.items():
        assert 0 <= entry["miou"] <= 100 and set(entry) >= {"pixel_acc", "mean_acc"}, name
    for name in ("fusion", "fusion_attention_off"):
        assert metrics[name]["round_trip_error"] < 1e-4
    assert metrics["fusion"]["attention_effect"] > 0  # the strengths left zero in 4 steps
    assert metrics["fusion_attention_off"]["attention_effect"] == 0.0
    assert "attention_effect" not in metrics["concat"]
    assert "Fusion vs concat" in summary and "attention off costs" in summary
    impute = metrics["fusion_missing_depth_impute"]
    assert impute["impute_ms_per_sample"] > 0 and impute["impute_conditional_gain_bits"] >= 0
    assert "impute_ms_per_sample" not in metrics["fusion_missing_depth_zero"]
    assert "of the zero-fill gap" in summary
    html = (tmp_path / "report.html").read_text()
    for figure in ("predictions.png", "attention_effect.png", "learning_curves.png"):
        assert (tmp_path / "figures" / figure).is_file() and figure in html
    assert "fusion_attention_off" in html and "misregist" in html
    assert "Depth absent: zero fill vs imputation by the flow" in html


def test_missing_section_states_the_rgb_alone_bound():
    """The report says how far imputation could go: the bound, and what half the gap needs."""
    metrics = {"fusion": {"miou": 88.0}, "rgb_only": {"miou": 44.0}}
    metrics[MISSING_DEPTH["zero"]] = {"miou": 48.0}
    metrics[MISSING_DEPTH["impute"]] = {"miou": 45.0, "impute_ms_per_sample": 60.0}
    text = _missing_section(metrics, 46.7).text
    assert "no prediction from RGB can expect more than 46.7 mIoU here" in text
    assert "closing half the gap would need 68.0" in text and "-8% of the gap" in text
    assert "expect more than" not in _missing_section(metrics, None).text  # tiny test sets


def test_the_shipped_demo_config_is_the_demo_s_own() -> None:
    """configs/demo.yaml (the README's ablation command) trains what `mango demo` trains."""
    from mango.config import dump_yaml, read_yaml
    from mango.demo.spec import DEMO_CONFIG, MODELS
    from mango.train.run import build_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    _, demo = build_config(DEMO_CONFIG, "demo config", MODELS["fusion"])
    _, yaml_config = build_config(read_yaml(shipped), str(shipped), [])
    assert dump_yaml(yaml_config) == dump_yaml(demo)
