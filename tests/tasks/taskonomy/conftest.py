"""Shared fixtures: tiny Taskonomy folders (new and old folder names) written once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mango.testing.taskonomy import write_taskonomy_fixture


@pytest.fixture(scope="session")
def taskonomy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All ten domains under their canonical names (4 train, 3 val, 32 x 32); do not modify."""
    return write_taskonomy_fixture(tmp_path_factory.mktemp("taskonomy"))


@pytest.fixture(scope="session")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same scenes (same seed) under the old folder and file names; do not modify."""
    return write_taskonomy_fixture(tmp_path_factory.mktemp("taskonomy_old"), old_names=True)


@pytest.fixture
def fresh_copy(tmp_path: Path, taskonomy_root: Path) -> Callable[[], Path]:
    """``fresh_copy()`` -> a private copy of ``taskonomy_root`` to corrupt."""

    def copy() -> Path:
        return Path(shutil.copytree(taskonomy_root, tmp_path / "copy"))

    return copy
