"""The curated mutants of ``make mutants`` (tools/mutants.py) still apply to the code: each
one's text occurs exactly once in its file, the result parses, and its tests exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("mango_mutants", ROOT / "tools" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def test_at_least_thirty_distinct_mutants() -> None:
    names = [m.name for m in TOOL.MUTANTS]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert len({(m.path, m.old, m.new) for m in TOOL.MUTANTS}) == len(names)


@pytest.mark.parametrize("mutant", TOOL.MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_cleanly(mutant) -> None:
    assert mutant.old != mutant.new
    assert TOOL.parses(mutant)
    for test in mutant.tests:
        path, _, name = test.partition("::")
        assert (ROOT / path).is_file(), test
        assert not name or f"def {name}(" in (ROOT / path).read_text(), test


def test_a_mutant_that_no_longer_matches_is_an_error() -> None:
    mutant = TOOL.MUTANTS[0]
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutant.apply("nothing to mutate here")


def test_docs_list_every_mutant() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    assert f"{len(TOOL.MUTANTS)} plausible one-line" in text
    missing = [m.name for m in TOOL.MUTANTS if f"| `{m.name}` |" not in text]
    assert not missing, missing
