"""The rows of ``mango ablate``: which variants a config and preset give, which seeds, and each
row and seed validated (config and model) before anything is trained (:func:`plan`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from mango.config import RunConfig, dump_yaml, read_yaml
from mango.errors import ConfigError
from mango.models.fusion import ALIGNED_FUSIONS, BASELINE_FUSIONS, Fusion
from mango.tasks.base import Task
from mango.train.run import build_config

PRESETS: dict[str, tuple[str, ...]] = {
    "quick": (),
    "paper": ("flow.blocks=12",),
    "baselines": (),
}
BLOCKS = (6, 8, 12, 16)


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
