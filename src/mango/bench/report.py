"""Printing ``mango bench``'s results: the rows, their notes, ICA scaling and the CUDA tables."""

from __future__ import annotations

from typing import Any


def print_result(result: dict[str, Any]) -> None:
    """Print the rows, their notes, the scaling table and (on CUDA) the recipe tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"mango bench ({result['machine']['device']}, {result['machine']['threads']} threads)"
    )
    for column in ("row", "mango", "baseline", "ratio", "goal", "met"):
        table.add_column(column)
    for r in result["rows"]:
        table.add_row(
            r["row"],
            f"{r['mango']:.1f} {r['unit']}",
            f"{r['baseline']:.1f} {r['unit']}",
            f"{r['ratio']:.2f}x",
            r["goal"],
            {True: "yes", False: "no", None: "-"}[r["met"]],
        )
    console.print(table)
    for r in result["rows"]:
        notes = {
            k: v
            for k, v in r.items()
            if k not in ("row", "mango", "baseline", "ratio", "goal", "met", "unit")
        }
        console.print(f"[dim]{r['row'][:2]} {notes}[/dim]")
    scaling = Table(title="ICA scaling (fused forward, inverse by row blocks)")
    for column in ("tokens per modality", "forward ms", "inverse ms", "activation MiB"):
        scaling.add_column(column)
    for s in result["scaling"]:
        scaling.add_row(
            str(s["tokens_per_modality"]),
            f"{s['forward_ms']:.1f}",
            f"{s['inverse_ms']:.1f}",
            f"{s['activation_mib']:.1f}",
        )
    console.print(scaling)
    if "cuda" in result:
        _print_cuda(console, result["cuda"])


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _print_cuda(console: Any, cuda: dict[str, Any]) -> None:
    from rich.table import Table

    step = cuda["nyudv2_step"]
    table = Table(title=f"{step['config']} training step ({step['shape']})")
    for column in ("backprop", "step ms", "peak MiB"):
        table.add_column(column)
    for name in ("memory_saving", "standard"):
        table.add_row(name, f"{step[name]['step_ms']:.1f}", _mib(step[name]["peak_mib"]))
    console.print(table)
    flows = Table(title="flow training step of each recipe, at its real size")
    for column in ("config", "flow", "tokens", "D", "blocks", "batch", "saving", "ms", "MiB"):
        flows.add_column(column)
    for f in cuda["recipe_flows"]:
        if "skipped" in f:
            flows.add_row(f["config"], f"skipped: {f['skipped']}")
            continue
        flows.add_row(
            f["config"],
            f["flow"],
            "+".join(map(str, f["tokens"])),
            str(f["dim"]),
            str(f["blocks"]),
            str(f["batch"]),
            "yes" if f["memory_saving"] else "no",
            f"{f['step_ms']:.1f}",
            _mib(f["peak_mib"]),
        )
    console.print(flows)
