"""Entry point of ``mango bench``; the benchmark code lives in the ``benchmarks/`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mango.errors import MangoError

#: the values of ``mango bench --device``
DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if ``mango bench`` can run there, else a one-line error naming ``--device``."""
    import torch

    if device not in DEVICES:
        raise MangoError(f"--device: unknown device {device!r}; choose {' or '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MangoError(
            "--device cuda: no CUDA GPU on this machine (torch.cuda.is_available() is False)"
        )
    return device


def run_bench(
    out: str | Path | None = None, quick: bool = False, compile: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Run the benchmark suite (``benchmarks/suite.py``) on ``device`` and return its results."""
    check_device(device)
    try:
        from benchmarks.suite import run
    except ImportError:
        raise MangoError(
            "mango bench: the benchmarks package is not installed (install mango from a source "
            "checkout: pip install -e .)"
        ) from None
    return run(out, quick=quick, compile=compile, device=device)
