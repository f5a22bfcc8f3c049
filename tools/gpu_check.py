"""``make gpu-check``: on a machine with a CUDA GPU, run the GPU tests and the CUDA benchmark.

Without a GPU it says so in one line and exits 0, so the command is safe to run anywhere. With
one it runs, each in its own process:

- the tests marked ``gpu`` (the fused ICA on CUDA against its dense form in outputs and every
  gradient, a 12-block round trip, memory-saving backprop, bf16 autocast training of each task's
  smoke config, a 2-process NCCL DDP run when two GPUs exist), with their JUnit counts;
- ``mango bench --device cuda``: every row, synchronized, and the recipes' peak memory.

It writes one JSON file, ``--out``: the device and versions, ``tests`` (exit code, counts,
seconds) and ``bench`` (exit code, seconds and the bench's own JSON). The exit code is 0 when
both passed.

Run: ``python tools/gpu_check.py --out gpu-check.json`` (or ``make gpu-check``); a tool of the
source checkout, not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mango.io import atomic_write_json

NO_GPU = "mango gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
ROOT = Path(__file__).resolve().parents[1]


def device_facts() -> dict[str, object]:
    """The GPU and software the check ran on."""
    return {
        "device": torch.cuda.get_device_name(0),
        "devices": torch.cuda.device_count(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def gpu_tests_command(report: Path | None = None) -> list[str]:
    """The pytest command line of the ``gpu`` tests (JUnit XML to ``report``)."""
    command = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", "gpu", "-rs"]
    return command if report is None else [*command, f"--junitxml={report}"]


def bench_command(out: Path) -> list[str]:
    """The ``mango bench --device cuda`` command line, its JSON to ``out``."""
    return [sys.executable, "-m", "mango.cli", "bench", "--device", "cuda", "--out", str(out)]


def _counts(report: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ElementTree

    if not report.is_file():
        return {}
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _timed(command: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=False)
    return done.returncode, round(time.perf_counter() - started, 1)


def run_checks(folder: Path) -> dict[str, Any]:
    """Run the tests and the bench (their own files go to ``folder``) and gather the results."""
    report, bench_out = folder / "tests.junit.xml", folder / "bench.json"
    tests_code, tests_seconds = _timed(gpu_tests_command(report))
    bench_code, bench_seconds = _timed(bench_command(bench_out))
    bench = json.loads(bench_out.read_text()) if bench_out.is_file() else {}
    return {
        **device_facts(),
        "tests": {"exit_code": tests_code, **_counts(report), "seconds": tests_seconds},
        "bench": {"exit_code": bench_code, "seconds": bench_seconds, **bench},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        result = run_checks(Path(folder))
    atomic_write_json(args.out, result)
    tests, bench = result["tests"], result["bench"]
    summary = {k: tests.get(k) for k in ("tests", "failures", "errors", "skipped")}
    print(
        f"mango gpu-check: {result['device']}: tests {json.dumps(summary)} "
        f"(exit {tests['exit_code']}, {tests['seconds']} s), bench exit {bench['exit_code']} "
        f"({bench['seconds']} s, {len(bench.get('rows', []))} rows) -> {args.out}"
    )
    return 0 if tests["exit_code"] == 0 and bench["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
