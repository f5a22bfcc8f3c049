"""The table of ``mango ablate``: per row the mean ± sd over seeds and the paired difference
from the ``mango`` row with its Student-t interval; ``ablation.md``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats

#: evaluate() keys of models with a flow (null in a row without one)
FLOW_KEYS = ("attention_effect", "round_trip_error", "bits_per_dim")
#: the row every other row is compared with
REFERENCE = "mango"


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


def interval_text(d: dict[str, Any] | None) -> str:
    """A :func:`paired_interval` as ``+m [+low, +high]`` (``+m`` below two pairs, ``–`` with none).

    Example:
        >>> interval_text(paired_interval([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]))
        '+2.00 [-0.48, +4.48]'
    """
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
            f"| {interval_text(r['difference'])} | {_cell(fusion, ',')} | {r['parameters']:,} "
            f"| {_cell(r['train_step_ms'], '.0f')} | {_cell(r['attention_effect'], '.3g')} "
            f"| {_cell(r['round_trip_error'], '.1e')} | {_cell(r['bits_per_dim'], '.3f')} "
            f"| {r['status']} |"
        )
    lines += ["", *(f"Skipped: {note}." for note in summary["skipped"])]
    return "\n".join(lines).rstrip() + "\n"
