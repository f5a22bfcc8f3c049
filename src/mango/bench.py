"""Entry point of ``mango bench``; the benchmark code lives in the ``benchmarks/`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mango.errors import MangoError


def run_bench(
    out: str | Path | None = None, quick: bool = False, compile: bool = False
) -> dict[str, Any]:
    """Run the benchmark suite (``benchmarks/suite.py``) and return its results."""
    try:
        from benchmarks.suite import run
    except ImportError:
        raise MangoError(
            "mango bench: the benchmarks package is not installed (install mango from a source "
            "checkout: pip install -e .)"
        ) from None
    return run(out, quick=quick, compile=compile)
