"""How ``mango bench`` measures: interleaved median timings, activation memory, and a table row.

Every row module (:mod:`mango.bench.suite`, :mod:`mango.bench.steps`, :mod:`mango.bench.cuda`)
measures with these, so the suite imports its rows and no row module imports the suite.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: the run configs of the source checkout, which the rows that build a recipe's model read
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    return paired_median_ms({"fn": fn}, repeats, warmup, device)["fn"]


def paired_median_ms(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, float]:
    """Median wall time (ms) of each function, timed in **interleaved** rounds.

    Compared functions then see the same machine state (frequency, caches, other load), so
    their ratio is far steadier than that of back-to-back blocks of repeats. On CUDA the device
    is synchronized before and after each call, so the time covers its kernels.
    """
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while running ``fn`` (activation memory).

    A tensor saved by several operations (or views of one buffer) is counted once.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def row(
    name: str, ours: float, baseline: float, goal: str, unit: str = "ms", **extra: Any
) -> dict[str, Any]:
    """One table row; ``goal`` is ``">= Nx faster"``, ``"<= Nx ..."`` or free text (no verdict)."""
    faster = goal.startswith(">=")
    ratio = baseline / ours if faster else ours / baseline
    met = None
    if goal.startswith((">=", "<=")):
        target = float(goal.split()[1].rstrip("x"))
        met = ratio >= target if faster else ratio <= target
    return {
        "row": name,
        "mango": ours,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "unit": unit,
        **extra,
    }
