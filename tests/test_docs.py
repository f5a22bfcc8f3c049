"""The documentation holds: the tutorial runs as written, the API page lists every public name,
and nothing in the repository points to files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

import mango
import mango.flows

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_tutorial_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {"__name__": "tutorial"}
        for block in blocks:
            exec(compile(block, str(DOCS / "tutorial.md"), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    for fusion in ("mango", "concat", "transformer"):
        assert re.search(rf"^{fusion} \d+\.\d%$", printed, flags=re.M), printed
        assert 25.0 <= namespace["accuracy"][fusion] <= 100.0


def test_api_page_lists_every_public_name() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    names = [n for n in (*mango.__all__, *mango.flows.__all__) if n != "__version__"]
    missing = [name for name in names if f"`{name}" not in text]
    assert not missing, f"docs/api.md does not document {missing}"
    for name in mango.__all__[1:]:
        assert getattr(mango, name).__module__.startswith("mango.")


#: files outside the repository that README, docs, src and tests must not point to (spelled in
#: pieces so that this file does not match the search itself)
OUTSIDE = (
    "shared" + "/",
    "DESIGN" + ".md",
    "DATA" + ".md",
    "PAPER" + ".md",
    "BASELINES" + ".md",
)


def test_nothing_points_outside_the_repository() -> None:
    pattern = "\\|".join(OUTSIDE)
    search = ["grep", "-rn", pattern, "README.md", "docs", "src", "tests"]
    found = subprocess.run(search, cwd=ROOT, capture_output=True, text=True).stdout
    assert not found, found
