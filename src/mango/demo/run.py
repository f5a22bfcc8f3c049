"""``mango demo``'s run: train the models of :mod:`mango.demo.spec`, evaluate them on the test
scenes, write ``metrics.json`` and the report."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mango.demo.report import comparison, write_demo_report
from mango.demo.spec import (
    ATTENTION_OFF,
    DEMO_CONFIG,
    ENTRIES,
    KEPT_SCORES,
    MISSING_DEPTH,
    MODELS,
    QUICK_OVERRIDES,
)
from mango.io import atomic_write_json
from mango.train.missing import MissingSetting
from mango.train.run import build_config, evaluate, train


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
        metrics[name] = {k: scores[k] for k in KEPT_SCORES if k in scores}
        records[name] = scores["record"]["training"]
        if name == "fusion":
            health = scores["flow_health"]
            off = evaluate(result.checkpoint, split="test", progress=progress, ablate="attention")
            metrics[ATTENTION_OFF] = {k: off[k] for k in KEPT_SCORES if k in off}
            for fill, entry in MISSING_DEPTH.items():
                absent = MissingSetting(("depth",), fill=fill)
                scores = evaluate(
                    result.checkpoint, split="test", progress=progress, missing=absent
                )
                metrics[entry] = {k: scores[k] for k in KEPT_SCORES if k in scores}
    metrics = {name: metrics[name] for name in ENTRIES}
    total = time.perf_counter() - started
    record = {"quick": quick, "overrides": list(overrides), "wall_time_s": round(total, 1)}
    atomic_write_json(out / "metrics.json", {**metrics, "record": {**record, "runs": records}})
    report = write_demo_report(out, metrics, seconds, health, quick)
    return f"{comparison(metrics)}; {total / 60:.1f} min. Report: {report}"
