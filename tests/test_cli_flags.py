"""Every ``--flag`` a message, help text or docstring of the package names is a flag of ``mango``.

A message that tells users to pass a flag the CLI does not have (``--table`` for
``--missing-table`` was one) sends them to a usage error; this test reads every string literal of
``src/mango`` and every ``mango ...`` command line of the docs and checks their flags against the
options of the click command tree that typer builds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

from mango.cli import app

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: flags of other programs that the package's strings name (git, in the run record)
OTHER_PROGRAMS = {"--porcelain", "--untracked-files"}


def cli_flags() -> set[str]:
    """Every long option of every ``mango`` command and subcommand."""
    flags: set[str] = set()
    pending = [typer.main.get_command(app)]
    while pending:
        command = pending.pop()
        for param in command.params:
            flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
        if hasattr(command, "commands"):  # a group (typer may vendor its own copy of click)
            pending.extend(command.commands.values())
    return flags | {"--help"}


def package_flags() -> dict[str, set[str]]:
    """The ``--flags`` named in string literals of ``src/mango``, with the files naming them."""
    named: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src" / "mango").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in FLAG.findall(node.value):
                    named.setdefault(flag, set()).add(str(path.relative_to(ROOT)))
    return named


def docs_flags() -> dict[str, set[str]]:
    """The ``--flags`` of the ``mango ...`` command lines in README.md and docs/*.md."""
    named: dict[str, set[str]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            for command in re.findall(r"(?:^|[`$] ?)mango (?:[a-z-]+)[^`|]*", line):
                for flag in FLAG.findall(command):
                    named.setdefault(flag, set()).add(str(path.relative_to(ROOT)))
    return named


def test_the_cli_has_the_flags_this_test_relies_on() -> None:
    flags = cli_flags()
    assert {"--missing-table", "--checkpoint", "--devices", "--set"} <= flags
    assert "--table" not in flags


def test_every_flag_the_package_names_exists() -> None:
    unknown = {
        flag: files
        for flag, files in package_flags().items()
        if flag not in cli_flags() | OTHER_PROGRAMS
    }
    assert not unknown, f"messages name flags that mango does not have: {unknown}"


def test_every_flag_of_a_documented_mango_command_exists() -> None:
    named = docs_flags()
    assert len(named) >= 10  # the docs' command lines were found
    unknown = {flag: files for flag, files in named.items() if flag not in cli_flags()}
    assert not unknown, f"documented mango commands name flags that mango does not have: {unknown}"
