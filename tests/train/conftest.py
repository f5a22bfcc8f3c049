"""Shared helpers for the training-pipeline tests: tiny synthetic runs through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "synthetic-smoke.yaml"
#: smaller than the smoke config so the tests stay fast
FAST = [
    "--set",
    "data.train_scenes=32",
    "--set",
    "data.val_scenes=8",
    "--set",
    "data.test_scenes=8",
]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `mango ...` in a fresh interpreter (as a user would), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "mango.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def smoke_args():
    return ["--config", str(SMOKE), *FAST]
