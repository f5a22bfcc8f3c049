"""``make gpu-check``: on a machine with a CUDA GPU, run the GPU tests and write one JSON file.

Without a GPU it says so in one line and exits 0, so the command is safe to run anywhere. With
one it runs the tests marked ``gpu`` (``tests/gpu``: the ICA on CUDA against its dense form in
outputs and every gradient, a 12-block float32 round trip, memory-saving backprop, bf16
autocast training of smoke configs, DDP when two GPUs exist) and writes ``--out`` with the
device, the versions and the test counts. ``mango bench`` rows on CUDA are not part of it yet.

Run: ``python -m mango.gpu_check --out gpu-check.json`` (or ``make gpu-check``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from mango.io import atomic_write_json

NO_GPU = "mango gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"


def device_facts() -> dict[str, object]:
    """The GPU and software the check ran on."""
    return {
        "device": torch.cuda.get_device_name(0),
        "devices": torch.cuda.device_count(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def _counts(report: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ElementTree

    if not report.is_file():
        return {}
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    root = Path(__file__).resolve().parents[2]
    report = args.out.with_suffix(".junit.xml")
    started = time.perf_counter()
    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(root / "tests" / "gpu"),
            "-m",
            "gpu",
            f"--junitxml={report}",
        ],
        cwd=root,
        check=False,
    )
    result = {
        **device_facts(),
        "tests_exit_code": tests.returncode,
        **_counts(report),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(args.out, result)
    print(f"mango gpu-check: {json.dumps(result)}")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
