"""No flow test runs on an identity flow: every ``MangoFlow(`` or ``FlowFusion(`` in a test or a
doctest is built by ``mango.testing.flows.acting_flow``, perturbed in the doctest itself, or says
why it need not act."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mango.flows import MangoFlow
from mango.testing.flows import acting_flow, idle_layers

ROOT = Path(__file__).resolve().parents[2]
#: a test may build a plain flow when its values do not matter or it trains or perturbs it itself
REASONS = ("# structural:", "# trained", "# perturbed below")
BUILDERS = re.compile(r"\b(MangoFlow|FlowFusion)\(")


def unexplained_flows() -> list[str]:
    """``path:line`` of every plain ``MangoFlow(`` in tests and doctests without a reason."""
    found = []
    for path in sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("src/mango/**/*.py")]):
        lines = path.read_text().splitlines()
        in_src = path.is_relative_to(ROOT / "src")
        for n, line in enumerate(lines):  # structural: the scan itself
            if not BUILDERS.search(line) or (in_src and ">>>" not in line):
                continue
            if re.search(r"^\s*(class|def) ", line) or '"""' in line:
                continue
            around = "\n".join(lines[max(n - 1, 0) : n + 6])
            perturbed_doctest = in_src and "randn_like(p)" in around
            if not perturbed_doctest and not any(reason in around for reason in REASONS):
                found.append(f"{path.relative_to(ROOT)}:{n + 1}")
    return found


def test_no_test_builds_a_plain_flow_without_a_reason() -> None:
    assert unexplained_flows() == []


def test_the_scan_finds_a_plain_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tests" / "test_x.py"
    fake.parent.mkdir()
    fake.write_text("flow = MangoFlow(4, (4, 4)).eval()\n")  # structural: the planted case
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert unexplained_flows() == ["tests/test_x.py:1"]


def test_a_fresh_flow_is_the_identity_and_an_acting_one_is_not() -> None:
    """Why the rule exists, and that ``idle_layers`` can tell."""
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    fresh = MangoFlow(4, (4, 4), blocks=2).double().eval()  # structural: the point of the test
    assert torch.equal(fresh(x)[0], x)
    assert len(idle_layers(fresh, x)) == sum(len(block) for block in fresh)
    assert idle_layers(acting_flow(4, (4, 4)), x) == []


def test_a_signed_layer_moves_only_an_x2_of_three_tokens_or_more() -> None:
    """docs/flows.md: rows ``L2-2`` and ``L2-1`` of ``N`` are zero. With tokens (3, 3) IMCA v1's
    X2 is ``a_odd + b_odd``, two tokens, so that layer (block position 5) never acts."""
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    assert idle_layers(acting_flow(4, (3, 3), blocks=1), x) == ["0.5 SignedCrossAttention"]
