"""Shared fixtures: tiny NYUDv2 / SUN RGB-D folders written once per session, copied to corrupt."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mango.testing.rgbd import write_nyudv2_fixture, write_sunrgbd_fixture


@pytest.fixture(scope="session")
def nyu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean NYUDv2 fixture (4 train, 3 val); do not modify it, use ``fresh_copy``."""
    return write_nyudv2_fixture(tmp_path_factory.mktemp("nyu"))


@pytest.fixture(scope="session")
def sun_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean SUN RGB-D fixture (4 train, 3 test); do not modify it, use ``fresh_copy``."""
    return write_sunrgbd_fixture(tmp_path_factory.mktemp("sun"))


@pytest.fixture
def fresh_copy(tmp_path: Path, nyu_root: Path, sun_root: Path) -> Callable[[str], Path]:
    """``fresh_copy("nyudv2" | "sunrgbd")`` -> a private copy of that fixture to corrupt."""

    def copy(layout: str) -> Path:
        source = {"nyudv2": nyu_root, "sunrgbd": sun_root}[layout]
        return Path(shutil.copytree(source, tmp_path / layout))

    return copy
