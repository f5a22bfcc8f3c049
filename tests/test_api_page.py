"""docs/api.md's signatures are the code's: every ``name(args)`` it documents has the parameters,
order and literal defaults of the object it names, so the page cannot drift from the code."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import mango
import mango.flows

ROOT = Path(__file__).resolve().parents[1]
#: a table row whose first cell is a signature: `name(args)` or `module.path.name(args)`
ROW = re.compile(r"^\| `([\w.]+)\((.*?)\)(?: -> [^`]*)?` \|", re.M)
#: parameters a caller never passes
SKIPPED = ("self",)


def documented() -> list[tuple[str, str]]:
    """``(name, argument list)`` of every signature row of docs/api.md."""
    return ROW.findall((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))


def resolve(name: str) -> Any:
    """The object a documented name means: a public name of ``mango`` or ``mango.flows``, or a
    dotted path into the package."""
    if "." not in name:
        return getattr(mango, name) if name in mango.__all__ else getattr(mango.flows, name)
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def documented_parameters(arguments: str) -> list[tuple[str, Any]]:
    """``(name, default)`` per documented parameter; ``...`` where the page's default is not a
    literal (a constant's name, or ``...`` for "see the text"), so only its name is checked."""
    tree = ast.parse(f"def f({arguments}): pass").body[0]
    assert isinstance(tree, ast.FunctionDef)
    args = tree.args
    names = [a.arg for a in args.args]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(names) - len(args.defaults))
    for node in args.defaults:
        try:
            defaults.append(ast.literal_eval(node))
        except ValueError:
            defaults.append(...)
    result = list(zip(names, defaults, strict=True))
    if args.vararg is not None:
        result.append(("*" + args.vararg.arg, inspect.Parameter.empty))
    if args.kwarg is not None:
        result.append(("**" + args.kwarg.arg, inspect.Parameter.empty))
    return result


def code_parameters(obj: Any) -> list[tuple[str, Any]]:
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    result = []
    for p in signature.parameters.values():
        if p.name in SKIPPED:
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        result.append((prefix + p.name, p.default))
    return result


def test_the_page_has_signature_rows() -> None:
    names = [name for name, _ in documented()]
    assert {"FlowFusion", "InvertibleCrossAttention", "MangoFlow", "MangoBlock"} <= set(names)


@pytest.mark.parametrize(("name", "arguments"), documented(), ids=lambda v: v[:40])
def test_documented_signature_matches_the_code(name: str, arguments: str) -> None:
    doc = documented_parameters(arguments)
    code = code_parameters(resolve(name))
    assert [n for n, _ in doc] == [n for n, _ in code][: len(doc)], (name, doc, code)
    undocumented = [n for n, d in code[len(doc) :] if d is inspect.Parameter.empty]
    assert not undocumented, f"{name}: required parameters missing from docs/api.md: {undocumented}"
    for (parameter, documented_default), (_, default) in zip(doc, code, strict=False):
        if documented_default is not ...:
            assert documented_default == default, (name, parameter, documented_default, default)
