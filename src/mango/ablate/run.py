"""Running ``mango ablate``: train and evaluate every row and seed, reuse or resume what a
previous run left, and rewrite ``ablation.json`` and ``ablation.md`` after every run."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mango.ablate.rows import Row, plan
from mango.ablate.table import FLOW_KEYS, markdown, summarise
from mango.io import atomic_write_json, atomic_write_text
from mango.train.checkpoint import saved_step
from mango.train.record import environment
from mango.train.run import CHECKPOINT, evaluate, train

#: the split every row is scored on
SPLIT = "test"


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` (missing, non-numeric, NaN or Inf: JSON ``null``)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_row(row: Row, where: str, data: Path | None, progress: bool) -> dict[str, Any]:
    """Train (or resume) and evaluate one row and seed; reuse it when its ``row.json`` exists."""
    name, steps = row.variant.name, row.cfg.trainer.max_steps
    label = f"{name} seed {row.seed}"
    finished = row.run_dir / "row.json"
    if finished.exists():
        _say(f"[ablate] {where} {label}: reused {finished}")
        return {**json.loads(finished.read_text(encoding="utf-8")), "status": "reused"}
    checkpoint = row.run_dir / CHECKPOINT
    resume = checkpoint.exists()
    start = saved_step(checkpoint) if resume else 0
    doing = f"resuming at step {start} of {steps}" if resume else f"training {steps} steps"
    _say(f"[ablate] {where} {label}: {doing}")
    began = time.perf_counter()
    result = train(row.task, row.cfg, row.run_dir, resume=resume, progress=progress)
    seconds = time.perf_counter() - began
    trained = result.steps - start
    scores = evaluate(result.checkpoint, data, split=SPLIT, progress=progress)
    record = {
        "name": name,
        "seed": row.seed,
        "overrides": list(row.variant.overrides),
        "metric": row.task.monitor,
        "value": _number(scores.get(row.task.monitor)),
        **{key: _number(scores.get(key)) for key in FLOW_KEYS},
        "parameters": row.parameters,
        "fusion_parameters": row.fusion_parameters,
        "train_step_ms": 1000 * seconds / trained if trained else None,
        "status": "resumed" if resume else "trained",
        "record": scores["record"]["training"],
    }
    atomic_write_json(finished, record)
    return record


def run_ablation(
    config: Path,
    out: Path,
    data: Path | None = None,
    preset: str = "quick",
    only: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    seeds: str | None = None,
) -> str:
    """Train and evaluate every selected row and seed; write ``ablation.json`` and ``.md``.

    Returns the markdown table. ``train_step_ms`` is the wall time around ``train()`` (model
    set-up, validation and checkpoints included) over the steps it trained this time.
    """
    out = Path(out)
    rows, notes = plan(config, out, data, preset, only, overrides, seeds)
    first = rows[0].cfg.trainer
    summary: dict[str, Any] = {
        "config": str(config),
        "preset": preset,
        "overrides": list(overrides),
        "task": rows[0].cfg.task,
        "metric": rows[0].task.monitor,
        "split": SPLIT,
        "budget": {
            "max_steps": first.max_steps,
            "global_batch": first.global_batch,
            "seed": rows[0].seed,
        },
        "seeds": list(dict.fromkeys(row.seed for row in rows)),
        "rows": [],
        "runs": [],
        "skipped": notes,
        "record": environment(),  # each run adds its checkpoint's training record
    }
    began = time.perf_counter()
    for i, row in enumerate(rows, 1):
        summary["runs"].append(_run_row(row, f"{i}/{len(rows)}", data, progress))
        summary["record"]["wall_time_s"] = round(time.perf_counter() - began, 1)
        summary["rows"] = summarise(summary["runs"])
        atomic_write_json(out / "ablation.json", summary)
        atomic_write_text(out / "ablation.md", markdown(summary))
    return markdown(summary)
