"""``make gpu-check`` (``tools/gpu_check.py``): without a GPU one line and exit 0; with one (faked here) one JSON file."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
assert _SPEC is not None and _SPEC.loader is not None
gpu_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check)


def test_without_a_gpu_it_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [gpu_check.NO_GPU]
    assert not (tmp_path / "g.json").exists()


def test_junit_counts(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite tests="6" failures="1" errors="0" skipped="2"/></testsuites>'
    )
    assert gpu_check._counts(report) == {"tests": 6, "failures": 1, "errors": 0, "skipped": 2}
    assert gpu_check._counts(tmp_path / "absent.xml") == {}


def _fake_machine(monkeypatch: pytest.MonkeyPatch, tests_code: int, bench_writes: bool) -> list:
    """CUDA 'available', fixed device facts, and subprocesses that write what the real ones do."""
    commands: list = []

    def fake_run(command, cwd, check):
        commands.append(command)
        if command[-1].startswith("--junitxml="):
            report = Path(command[-1].removeprefix("--junitxml="))
            assert command == gpu_check.gpu_tests_command(report)
            report.write_text('<testsuite tests="9" failures="0" errors="0" skipped="1"/>')
            return subprocess.CompletedProcess(command, tests_code)
        assert command[:3] == [sys.executable, "-m", "mango.cli"]
        if bench_writes:
            rows = [{"row": "1. ICA forward", "mango": 2.0}]
            Path(command[-1]).write_text(json.dumps({"machine": {"device": "H"}, "rows": rows}))
        return subprocess.CompletedProcess(command, 0 if bench_writes else 1)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "device_facts", lambda: {"device": "H", "devices": 1})
    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    return commands


def test_with_a_gpu_it_writes_one_json_of_tests_and_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = _fake_machine(monkeypatch, tests_code=0, bench_writes=True)
    out = tmp_path / "g.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert list(tmp_path.iterdir()) == [out]  # the junit and bench files stay in a temp folder
    result = json.loads(out.read_text())
    assert result["device"] == "H" and result["devices"] == 1
    tests = result["tests"]
    assert {k: tests[k] for k in ("exit_code", "tests", "failures", "errors", "skipped")} == {
        "exit_code": 0, "tests": 9, "failures": 0, "errors": 0, "skipped": 1
    }  # fmt: skip
    assert result["bench"]["exit_code"] == 0 and result["bench"]["rows"][0]["mango"] == 2.0
    assert [c[3:] for c in commands] == [
        [str(gpu_check.ROOT / "tests"), "-m", "gpu", "-rs", commands[0][-1]],
        ["bench", "--device", "cuda", "--out", commands[1][-1]],
    ]
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("tests_code,bench_writes", [(1, True), (0, False)])
def test_a_failure_still_writes_the_json_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tests_code: int, bench_writes: bool
) -> None:
    _fake_machine(monkeypatch, tests_code, bench_writes)
    out = tmp_path / "g.json"
    assert gpu_check.main(["--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["tests"]["exit_code"] == tests_code
    assert ("rows" in result["bench"]) == bench_writes


def test_the_gpu_tests_skip_here_with_their_reasons(tmp_path: Path) -> None:
    """``make gpu-check``'s own test selection, run on this machine: all skipped, each with a
    one-line reason (no CUDA here, or fewer than two GPUs for DDP)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu tests run for real")
    report = tmp_path / "r.xml"
    done = subprocess.run(
        gpu_check.gpu_tests_command(report), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:]
    counts = gpu_check._counts(report)
    assert counts["tests"] >= 10 and counts["skipped"] == counts["tests"], counts
    reasons = set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", done.stdout))
    assert reasons == {"needs a CUDA GPU", "needs two CUDA GPUs"}, done.stdout[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this would run the whole check")
def test_make_gpu_check_with_gpu_python_builds_no_venv() -> None:
    """``make gpu-check GPU_PYTHON=...`` runs that Python on ``src/`` without building ``.venv``."""
    root = ROOT
    python = f"GPU_PYTHON={sys.executable}"
    # under `make test` the outer make's settings would make this one print its directory
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    make = ["make", "--no-print-directory"]
    dry = subprocess.run(
        [*make, "-n", "gpu-check", python], cwd=root, env=env, capture_output=True, text=True
    )
    assert dry.stdout.splitlines() == [
        f"PYTHONPATH=src${{PYTHONPATH:+:$PYTHONPATH}} {sys.executable} tools/gpu_check.py "
        "--out gpu-check.json"
    ]
    done = subprocess.run(
        [*make, "-s", "gpu-check", python], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == gpu_check.NO_GPU
