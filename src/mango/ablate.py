"""``mango ablate``: the paper's ablations as one command, every row on the same data and budget.

Rows (:func:`variants`, from the validated config; each adds its overrides to the config, after
the preset's and the user's ``--set``):

- ``mango``: the config as given, with ``model.fusion=mango``;
- ``concat``: ``model.fusion=concat`` (same encoders and head, no flow);
- ``single_<m>``: ``model.fusion=single``, ``model.modalities=[m]`` for each of ``model.modalities``;
- ``partitions_mmca``, ``partitions_mmca_imca``: ``flow.partitions`` cut to MMCA, MMCA + IMCA
  (all three partitions is the ``mango`` row; paper Table 5);
- ``blocks_6`` .. ``blocks_16``: ``flow.blocks=N`` (paper Table 7);
- ``coupling_only``: ``flow.partitions=[]``, blocks of ActNorm + affine coupling (paper Table 4).

A row the task's model section cannot express (no ``concat`` or ``single`` fusion, no
``modalities`` list) is skipped with a note. Presets: ``quick`` runs the config as it is;
``paper`` also sets ``flow.blocks=12`` (the paper's depth) for every row but ``blocks_N``.

Resume rule: a row whose ``OUT/runs/<row>/row.json`` exists is reused as it is; a row with a
checkpoint but no ``row.json`` is resumed (``train(resume=True)``; a checkpoint already at
``max_steps`` trains no further step) and evaluated; any other row is trained. Every row is
validated (config and model) before any training starts, and a row folder trained with another
config is an error, so a table never mixes budgets. ``ablation.json`` and ``ablation.md`` are
rewritten atomically after every row.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from mango.config import RunConfig, dump_yaml, read_yaml
from mango.errors import ConfigError
from mango.io import atomic_write_json, atomic_write_text
from mango.tasks.base import Task
from mango.train.checkpoint import saved_step
from mango.train.run import CHECKPOINT, build_config, evaluate, train

PRESETS: dict[str, tuple[str, ...]] = {"quick": (), "paper": ("flow.blocks=12",)}
BLOCKS = (6, 8, 12, 16)
SPLIT = "test"
#: evaluate() keys of models with a flow (null in a row without one)
FLOW_KEYS = ("attention_effect", "round_trip_error", "bits_per_dim")


@dataclass(frozen=True)
class Variant:
    """One ablation row: a name and the overrides that make it from the config."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    """A validated row, ready to train into ``run_dir``."""

    variant: Variant
    task: Task
    cfg: RunConfig
    run_dir: Path
    parameters: int


def variants(cfg: RunConfig) -> tuple[list[Variant], list[str]]:
    """The rows of ``cfg``'s ablation, and a note for each kind of row its task cannot express."""
    fields = type(cfg.model).model_fields
    fusions = get_args(fields["fusion"].annotation)
    mango = ("model.fusion=mango",)
    rows = [Variant("mango", mango)]
    notes = []
    if "concat" in fusions:
        rows.append(Variant("concat", ("model.fusion=concat",)))
    else:
        notes.append(f"concat: task {cfg.task} has no concat fusion ({', '.join(fusions)})")
    if "single" not in fusions:
        notes.append(f"single_*: task {cfg.task} has no single fusion ({', '.join(fusions)})")
    elif "modalities" not in fields:
        notes.append(f"single_*: task {cfg.task} has no model.modalities to choose one from")
    else:
        rows += [
            Variant(f"single_{m}", ("model.fusion=single", f"model.modalities=[{m}]"))
            for m in cfg.model.modalities
        ]
    rows += [
        Variant("partitions_mmca", (*mango, "flow.partitions=[mmca]")),
        Variant("partitions_mmca_imca", (*mango, "flow.partitions=[mmca, imca]")),
        *(Variant(f"blocks_{n}", (*mango, f"flow.blocks={n}")) for n in BLOCKS),
        Variant("coupling_only", (*mango, "flow.partitions=[]")),
    ]
    return rows, notes


def _select(rows: list[Variant], only: str | None) -> list[Variant]:
    if only is None:
        return rows
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    known = [row.name for row in rows]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ConfigError(
            f"--only: unknown row {unknown[0] if unknown else only!r}; "
            f"choose from {', '.join(known)}"
        )
    return [row for row in rows if row.name in wanted]


def _check_row(
    raw: dict[str, Any],
    source: str,
    extra: list[str],
    variant: Variant,
    data: Path | None,
    out: Path,
) -> Row:
    """Validate one row's config and model; refuse a row folder trained with another config."""
    task, cfg = build_config(
        raw, f"{source} (row {variant.name})", extra + list(variant.overrides), data
    )
    model = task.build_model(cfg)
    run_dir = out / "runs" / variant.name
    saved = run_dir / "config.yaml"
    if saved.exists() and saved.read_text(encoding="utf-8") != dump_yaml(cfg):
        raise ConfigError(
            f"{run_dir}: holds row {variant.name} trained with another config; "
            "choose another --out or delete that folder"
        )
    return Row(variant, task, cfg, run_dir, sum(p.numel() for p in model.parameters()))


def plan(
    config: Path,
    out: Path,
    data: Path | None = None,
    preset: str = "quick",
    only: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[list[Row], list[str]]:
    """Validate every selected row (config and model) before anything is trained."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    raw = read_yaml(config)
    extra = [*PRESETS[preset], *overrides]
    _, cfg = build_config(raw, str(config), extra, data)
    found, notes = variants(cfg)
    return [_check_row(raw, str(config), extra, v, data, out) for v in _select(found, only)], notes


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` (missing, non-numeric, NaN or Inf: JSON ``null``)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_row(row: Row, where: str, data: Path | None, progress: bool) -> dict[str, Any]:
    """Train (or resume) and evaluate one row; reuse it when its ``row.json`` exists."""
    name, steps = row.variant.name, row.cfg.trainer.max_steps
    finished = row.run_dir / "row.json"
    if finished.exists():
        _say(f"[ablate] {where} {name}: reused {finished}")
        return {**json.loads(finished.read_text(encoding="utf-8")), "status": "reused"}
    checkpoint = row.run_dir / CHECKPOINT
    resume = checkpoint.exists()
    start = saved_step(checkpoint) if resume else 0
    doing = f"resuming at step {start} of {steps}" if resume else f"training {steps} steps"
    _say(f"[ablate] {where} {name}: {doing}")
    began = time.perf_counter()
    result = train(row.task, row.cfg, row.run_dir, resume=resume, progress=progress)
    seconds = time.perf_counter() - began
    trained = result.steps - start
    scores = evaluate(result.checkpoint, data, split=SPLIT, progress=progress)
    record = {
        "name": name,
        "overrides": list(row.variant.overrides),
        "metric": row.task.monitor,
        "value": _number(scores.get(row.task.monitor)),
        **{key: _number(scores.get(key)) for key in FLOW_KEYS},
        "parameters": row.parameters,
        "train_step_ms": 1000 * seconds / trained if trained else None,
        "status": "resumed" if resume else "trained",
    }
    atomic_write_json(finished, record)
    return record


def _cell(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(summary: dict[str, Any]) -> str:
    """``ablation.md``: a header naming config, preset and budget, then one table line per row."""
    budget = summary["budget"]
    sets = " ".join(f"`--set {s}`" for s in summary["overrides"]) or "no `--set`"
    lines = [
        f"# Ablation of `{summary['config']}` (task {summary['task']}, preset {summary['preset']})",
        "",
        f"Budget: {budget['max_steps']} steps at batch size {budget['batch_size']} "
        f"(seed {budget['seed']}), {sets}; metrics on the {summary['split']} split. "
        "Every row shares encoders, head, data and budget; only the row's overrides differ.",
        "",
        f"| row | overrides | {summary['metric']} | attention effect | round trip | bits/dim "
        "| parameters | ms/step | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['name']} | `{' '.join(r['overrides'])}` | {_cell(r['value'], '.2f')} "
            f"| {_cell(r['attention_effect'], '.3g')} | {_cell(r['round_trip_error'], '.1e')} "
            f"| {_cell(r['bits_per_dim'], '.3f')} | {r['parameters']:,} "
            f"| {_cell(r['train_step_ms'], '.0f')} | {r['status']} |"
        )
    lines += ["", *(f"Skipped: {note}." for note in summary["skipped"])]
    return "\n".join(lines).rstrip() + "\n"


def run_ablation(
    config: Path,
    out: Path,
    data: Path | None = None,
    preset: str = "quick",
    only: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> str:
    """Train and evaluate every selected row; write ``ablation.json`` and ``ablation.md``.

    Returns the markdown table. ``train_step_ms`` is the wall time around ``train()`` (model
    set-up, validation and checkpoints included) over the steps it trained this time.
    """
    out = Path(out)
    rows, notes = plan(config, out, data, preset, only, overrides)
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
            "batch_size": first.batch_size,
            "seed": first.seed,
        },
        "rows": [],
        "skipped": notes,
    }
    for i, row in enumerate(rows, 1):
        summary["rows"].append(_run_row(row, f"{i}/{len(rows)}", data, progress))
        atomic_write_json(out / "ablation.json", summary)
        atomic_write_text(out / "ablation.md", markdown(summary))
    return markdown(summary)
