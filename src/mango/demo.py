"""``mango demo``: flow fusion vs concatenation and each single modality on synthetic RGB-D scenes.

Trains five models with identical encoders, decoder and schedule — MANGO fusion of RGB and
depth, concatenation fusion, a joint Transformer fusion with as many parameters as the flow
(``transformer``: the implicit attention the paper argues against; every baseline, over seeds,
is in ``mango ablate --preset baselines``), RGB
only, depth only — on procedurally generated scenes whose
classes need both colour and depth and whose depth map is misregistered against the RGB image
(:mod:`mango.data.synthetic`). It evaluates them on held-out test scenes (never used for any
choice), evaluates the fusion model once more with its cross-modal attention switched off
(``fusion_attention_off``: the same checkpoint, the rest unchanged) and with depth absent
(``fusion_missing_depth_zero`` / ``_impute``: zero-filled, or imputed by its flow), and writes
``metrics.json`` and ``report.html`` with figures. Everything is offline and runs on a CPU.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mango.demo_report import ATTENTION_OFF, MISSING_DEPTH, comparison, write_demo_report
from mango.io import atomic_write_json
from mango.train.missing import MissingSetting
from mango.train.run import build_config, evaluate, train

#: the demo's fusion model; the single-modality models change only model.modalities/fusion
DEMO_CONFIG: dict[str, Any] = {
    "task": "synthetic",
    "data": {
        "size": 64,
        "train_scenes": 4000,
        "val_scenes": 100,
        "test_scenes": 300,
        "misregistration": 0.125,
    },
    "model": {"encoder": "conv-small", "fuse_stages": [2], "dim": 32, "head_dim": 64},
    "flow": {"blocks": 4, "coupling_hidden": 64},
    "loss": {"nll_weight": 0.1},
    "optim": {"lr": 2e-3, "head_lr_mult": 1.0, "warmup_steps": 20, "schedule": "cosine"},
    "trainer": {
        "max_steps": 400,
        "global_batch": 16,
        "steps_per_checkpoint": 100,
        "log_every": 10,
        "accelerator": "cpu",
    },
}
QUICK_OVERRIDES = [
    "trainer.max_steps=150",
    "trainer.steps_per_checkpoint=50",
    "data.test_scenes=100",
    "data.size=48",
]
MODELS = {
    "fusion": ["model.fusion=mango", "model.modalities=[rgb, depth]"],
    "concat": ["model.fusion=concat", "model.modalities=[rgb, depth]"],
    "transformer": ["model.fusion=transformer", "model.modalities=[rgb, depth]"],
    "rgb_only": ["model.fusion=single", "model.modalities=[rgb]"],
    "depth_only": ["model.fusion=single", "model.modalities=[depth]"],
}
#: the entries of metrics.json, in report order
ENTRIES = (
    "fusion",
    ATTENTION_OFF,
    "concat",
    "transformer",
    "rgb_only",
    "depth_only",
    *MISSING_DEPTH.values(),
)
_KEEP = (
    "miou",
    "pixel_acc",
    "mean_acc",
    "per_class_iou",
    "bits_per_dim",
    "attention_effect",
    "round_trip_error",
    "impute_ms_per_sample",
    "impute_bits_per_dim",
    "impute_start_bits_per_dim",
    "impute_conditional_gain_bits",
)


def run_demo(
    out: str | Path, quick: bool = False, progress: bool = True, overrides: Sequence[str] = ()
) -> str:
    """Train, evaluate and report; returns a one-paragraph summary.

    ``overrides`` (``key=value``) apply to every model after the quick settings (tests use them
    to shrink the run).
    """
    out = Path(out)
    runs = out / "runs"
    started = time.perf_counter()
    metrics: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    health: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for name, model_overrides in MODELS.items():
        task, cfg = build_config(
            DEMO_CONFIG,
            "demo config",
            (QUICK_OVERRIDES if quick else []) + model_overrides + list(overrides),
        )
        run_dir = runs / name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # the demo's own previous run: it is retrained from scratch
        t0 = time.perf_counter()
        if progress:
            print(f"[demo] training {name} ({cfg.trainer.max_steps} steps)", flush=True)
        result = train(task, cfg, run_dir, progress=progress)
        seconds[name] = time.perf_counter() - t0
        scores = evaluate(result.checkpoint, split="test", progress=progress)
        metrics[name] = {k: scores[k] for k in _KEEP if k in scores}
        records[name] = scores["record"]["training"]
        if name == "fusion":
            health = scores["flow_health"]
            off = evaluate(result.checkpoint, split="test", progress=progress, ablate="attention")
            metrics[ATTENTION_OFF] = {k: off[k] for k in _KEEP if k in off}
            for fill, entry in MISSING_DEPTH.items():
                absent = MissingSetting(("depth",), fill=fill)
                scores = evaluate(
                    result.checkpoint, split="test", progress=progress, missing=absent
                )
                metrics[entry] = {k: scores[k] for k in _KEEP if k in scores}
    metrics = {name: metrics[name] for name in ENTRIES}
    total = time.perf_counter() - started
    record = {"quick": quick, "overrides": list(overrides), "wall_time_s": round(total, 1)}
    atomic_write_json(out / "metrics.json", {**metrics, "record": {**record, "runs": records}})
    report = write_demo_report(out, metrics, seconds, health, quick)
    return f"{comparison(metrics)}; {total / 60:.1f} min. Report: {report}"
