"""``make gpu-check`` on a machine without a GPU: one line, exit 0, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mango import gpu_check


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
