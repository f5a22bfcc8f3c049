"""``mango ablate``: ablations and baselines as one command, every row on the same data and budget.

Rows (:func:`variants`, from the validated config and the preset; each adds its overrides to
the config, after the preset's and the user's ``--set``).

Presets ``quick`` and ``paper`` (the paper's ablations):

- ``mango``: the config as given, with ``model.fusion=mango``;
- ``concat``: ``model.fusion=concat`` (same encoders and head, no flow);
- ``single_<m>``: ``model.fusion=single``, ``model.modalities=[m]`` for each modality;
- ``partitions_mmca``, ``partitions_mmca_imca``: ``flow.partitions`` cut to MMCA, MMCA + IMCA
  (all three partitions is the ``mango`` row; paper Table 5);
- ``blocks_6`` .. ``blocks_16``: ``flow.blocks=N`` (paper Table 7);
- ``coupling_only``: ``flow.partitions=[]``, blocks of ActNorm + affine coupling (paper Table 4).

Preset ``baselines`` (the paper's thesis: MANGO against attention-based fusion of equal size):
``mango``, ``coupling_only``, ``concat``, ``late`` (where the task has it), one row per
attention baseline (``transformer``, ``cross_attention``, ``tokenfusion``, ``geminifusion``,
``cmx``; ``model.fusion=<name>``), ``control_noise`` (MANGO with the second modality replaced
by Gaussian noise of its shape, ``model.noise=[m]``) and ``single_*``.

A row the task's model section cannot express (no ``concat`` or ``single`` fusion, no
``modalities`` list, unequal token counts for an aligned baseline) is skipped with a note.
``paper`` also sets ``flow.blocks=12`` (the paper's depth) for every row but ``blocks_N``.

Seeds: every row is trained once per seed (``seeds``; default the config's
``trainer.seed``) into ``OUT/runs/<row>/seed<s>/``. The table gives, per row, the mean ± sd
over seeds, every seed's value, and the paired difference from ``mango`` (same seeds) with its
95 % Student-t interval (:func:`paired_interval`).

Resume rule, per row and seed: a folder whose ``row.json`` exists is reused as it is; one with a
checkpoint but no ``row.json`` is resumed (``train(resume=True)``; a checkpoint already at
``max_steps`` trains no further step) and evaluated; any other is trained. Every row and seed is
validated (config and model) before any training starts, and a folder trained with another
config is an error, so a table never mixes budgets. ``ablation.json`` and ``ablation.md`` are
rewritten atomically after every run.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from scipy import stats

from mango.config import RunConfig, dump_yaml, read_yaml
from mango.errors import ConfigError
from mango.io import atomic_write_json, atomic_write_text
from mango.models.fusion import ALIGNED_FUSIONS, BASELINE_FUSIONS, Fusion
from mango.tasks.base import Task
from mango.train.checkpoint import saved_step
from mango.train.record import environment
from mango.train.run import CHECKPOINT, build_config, evaluate, train

PRESETS: dict[str, tuple[str, ...]] = {
    "quick": (),
    "paper": ("flow.blocks=12",),
    "baselines": (),
}
BLOCKS = (6, 8, 12, 16)
SPLIT = "test"
#: evaluate() keys of models with a flow (null in a row without one)
FLOW_KEYS = ("attention_effect", "round_trip_error", "bits_per_dim")
#: the row every other row is compared with
REFERENCE = "mango"


@dataclass(frozen=True)
class Variant:
    """One ablation row: a name and the overrides that make it from the config."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    """A validated row and seed, ready to train into ``run_dir``."""

    variant: Variant
    seed: int
    task: Task
    cfg: RunConfig
    run_dir: Path
    parameters: int
    fusion_parameters: int


def variants(
    cfg: RunConfig, preset: str = "quick", modalities: Sequence[str] | None = None
) -> tuple[list[Variant], list[str]]:
    """The rows of ``cfg``'s ablation for ``preset``, and a note for each kind of row its task
    cannot express. ``modalities``: the model's modalities in token order (default
    ``cfg.model.modalities`` where the task has that field)."""
    fields = type(cfg.model).model_fields
    fusions = get_args(fields["fusion"].annotation)
    if modalities is None:
        modalities = getattr(cfg.model, "modalities", None) or ()
    mango = ("model.fusion=mango",)
    notes = []
    concat = []
    if "concat" in fusions:
        concat = [Variant("concat", ("model.fusion=concat",))]
    else:
        notes.append(f"concat: task {cfg.task} has no concat fusion ({', '.join(fusions)})")
    singles = []
    if "single" not in fusions:
        notes.append(f"single_*: task {cfg.task} has no single fusion ({', '.join(fusions)})")
    elif "modalities" not in fields:
        notes.append(f"single_*: task {cfg.task} has no model.modalities to choose one from")
    else:
        singles = [
            Variant(f"single_{m}", ("model.fusion=single", f"model.modalities=[{m}]"))
            for m in modalities
        ]
    coupling_only = Variant("coupling_only", (*mango, "flow.partitions=[]"))
    if preset != "baselines":
        rows = [
            Variant("mango", mango),
            *concat,
            *singles,
            Variant("partitions_mmca", (*mango, "flow.partitions=[mmca]")),
            Variant("partitions_mmca_imca", (*mango, "flow.partitions=[mmca, imca]")),
            *(Variant(f"blocks_{n}", (*mango, f"flow.blocks={n}")) for n in BLOCKS),
            coupling_only,
        ]
        return rows, notes
    rows = [Variant("mango", mango), coupling_only, *concat]
    if "late" in fusions:
        rows.append(Variant("late", ("model.fusion=late",)))
    rows += [Variant(name, (f"model.fusion={name}",)) for name in BASELINE_FUSIONS]
    if "noise" in fields and len(modalities) >= 2:
        rows.append(Variant("control_noise", (*mango, f"model.noise=[{modalities[1]}]")))
    else:
        notes.append(f"control_noise: task {cfg.task} has no model.noise or second modality")
    return rows + singles, notes


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


def parse_seeds(text: str | None, base: int) -> list[int]:
    """``--seeds``: ``N`` (N seeds from ``base``, the config's ``trainer.seed``) or a comma list.

    Example:
        >>> parse_seeds("3", base=0), parse_seeds("7,1", base=0), parse_seeds(None, base=5)
        ([0, 1, 2], [7, 1], [5])
    """
    if text is None:
        return [base]
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = list(range(base, base + count))
    except ValueError:
        raise ConfigError(
            f"--seeds: expected a count >= 1 or a comma-separated list of seeds, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct seeds, got {text!r}")
    return seeds


def _fusion_parameters(model: Any) -> int:
    return sum(m.parameter_count() for m in model.modules() if isinstance(m, Fusion))


def _check_row(
    raw: dict[str, Any],
    source: str,
    extra: list[str],
    variant: Variant,
    seed: int,
    data: Path | None,
    out: Path,
) -> Row:
    """Validate one row's config and model; refuse a folder trained with another config."""
    task, cfg = build_config(
        raw,
        f"{source} (row {variant.name})",
        [*extra, *variant.overrides, f"trainer.seed={seed}"],
        data,
    )
    model = task.build_model(cfg)
    run_dir = out / "runs" / variant.name / f"seed{seed}"
    saved = run_dir / "config.yaml"
    if saved.exists() and saved.read_text(encoding="utf-8") != dump_yaml(cfg):
        raise ConfigError(
            f"{run_dir}: holds row {variant.name} trained with another config; "
            "choose another --out or delete that folder"
        )
    parameters = sum(p.numel() for p in model.parameters())
    return Row(variant, seed, task, cfg, run_dir, parameters, _fusion_parameters(model))


def plan(
    config: Path,
    out: Path,
    data: Path | None = None,
    preset: str = "quick",
    only: str | None = None,
    overrides: Sequence[str] = (),
    seeds: str | None = None,
) -> tuple[list[Row], list[str]]:
    """Validate every selected row and seed (config and model) before anything is trained."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    raw = read_yaml(config)
    extra = [*PRESETS[preset], *overrides]
    task, cfg = build_config(raw, str(config), extra, data)
    chosen = parse_seeds(seeds, cfg.trainer.seed)
    modalities = list(task.build_model(cfg).modalities)
    found, notes = variants(cfg, preset, modalities)
    rows = []
    for variant in _select(found, only):
        try:
            rows += [
                _check_row(raw, str(config), extra, variant, seed, data, out) for seed in chosen
            ]
        except ConfigError as error:
            if variant.name not in ALIGNED_FUSIONS:
                raise
            notes.append(f"{variant.name}: {error}")
    return rows, notes


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


def paired_interval(
    values: Sequence[float], reference: Sequence[float], level: float = 0.95
) -> dict[str, float | int | None]:
    """Mean of the paired differences ``values − reference`` and its Student-t interval.

    ``low``/``high`` are ``mean ∓ t_{(1+level)/2, n−1} · sd / √n`` (``None`` below two pairs).

    Example:
        >>> d = paired_interval([2.0, 3.0, 4.0], [1.0, 1.0, 1.0])
        >>> d["mean"], round(d["low"], 3), round(d["high"], 3), d["n"]
        (2.0, -0.484, 4.484, 3)
    """
    diffs = [v - r for v, r in zip(values, reference, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs) if n else None
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per row from its per-seed records: mean ± sd, every seed's value, and the
    paired difference from the ``mango`` row over the seeds both have."""
    names = list(dict.fromkeys(r["name"] for r in records))
    by_row = {name: [r for r in records if r["name"] == name] for name in names}
    reference = {r["seed"]: r["value"] for r in by_row.get(REFERENCE, [])}
    rows = []
    for name, runs in by_row.items():
        values = [r["value"] for r in runs]
        finite = [v for v in values if v is not None]
        statuses = {r["status"] for r in runs}
        entry: dict[str, Any] = {
            "name": name,
            "overrides": runs[0]["overrides"],
            "metric": runs[0]["metric"],
            "seeds": [r["seed"] for r in runs],
            "values": values,
            "value": statistics.fmean(finite) if finite else None,
            "sd": statistics.stdev(finite) if len(finite) > 1 else None,
            **{key: _mean([r[key] for r in runs]) for key in FLOW_KEYS},
            "parameters": runs[0]["parameters"],
            "fusion_parameters": runs[0].get("fusion_parameters"),
            "train_step_ms": _mean([r["train_step_ms"] for r in runs]),
            "status": statuses.pop() if len(statuses) == 1 else "mixed",
            "difference": None,
        }
        pairs = [
            (r["value"], reference[r["seed"]])
            for r in runs
            if r["value"] is not None and reference.get(r["seed"]) is not None
        ]
        if name != REFERENCE and pairs:
            entry["difference"] = paired_interval(*zip(*pairs, strict=True))
        rows.append(entry)
    return rows


def _cell(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _spread(row: dict[str, Any]) -> str:
    if row["value"] is None:
        return "–"
    return f"{row['value']:.2f}" + ("" if row["sd"] is None else f" ± {row['sd']:.2f}")


def _difference(row: dict[str, Any]) -> str:
    d = row["difference"]
    if d is None or d["mean"] is None:
        return "–"
    if d["low"] is None:
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def markdown(summary: dict[str, Any]) -> str:
    """``ablation.md``: a header naming config, preset, budget and seeds, then one line per row."""
    budget = summary["budget"]
    sets = " ".join(f"`--set {s}`" for s in summary["overrides"]) or "no `--set`"
    seeds = summary.get("seeds", [budget["seed"]])
    lines = [
        f"# Ablation of `{summary['config']}` (task {summary['task']}, preset {summary['preset']})",
        "",
        f"Budget: {budget['max_steps']} steps at global batch {budget['global_batch']}, "
        f"seeds {', '.join(map(str, seeds))}, {sets}; metrics on the {summary['split']} split. "
        "Every row shares encoders, head, data and budget; only the row's overrides differ. "
        f"Mean ± sd over seeds; Δ vs {REFERENCE}: the mean paired difference (same seeds) with "
        "its 95 % t interval.",
        "",
        f"| row | overrides | {summary['metric']} | per seed | Δ vs {REFERENCE} [95 % CI] "
        "| fusion parameters | parameters | ms/step | attention effect | round trip | bits/dim "
        "| status |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["rows"]:
        per_seed = ", ".join(_cell(v, ".2f") for v in r["values"])
        fusion = r.get("fusion_parameters")
        lines.append(
            f"| {r['name']} | `{' '.join(r['overrides'])}` | {_spread(r)} | {per_seed} "
            f"| {_difference(r)} | {_cell(fusion, ',')} | {r['parameters']:,} "
            f"| {_cell(r['train_step_ms'], '.0f')} | {_cell(r['attention_effect'], '.3g')} "
            f"| {_cell(r['round_trip_error'], '.1e')} | {_cell(r['bits_per_dim'], '.3f')} "
            f"| {r['status']} |"
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
