"""Shared ``tensors`` fixtures: a multi-class and a multi-label folder per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mango.testing.tensors import write_tensors_fixture


@pytest.fixture(scope="session")
def multiclass_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tensors_fixture(tmp_path_factory.mktemp("tensors_mc"), sizes=(96, 0, 32))


@pytest.fixture(scope="session")
def multilabel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tensors_fixture(
        tmp_path_factory.mktemp("tensors_ml"), sizes=(96, 24, 32), target="multilabel"
    )


@pytest.fixture
def tensors_copy(multiclass_root: Path, tmp_path: Path) -> Path:
    """A private copy of the multi-class fixture that a test may break."""
    return Path(shutil.copytree(multiclass_root, tmp_path / "data"))
