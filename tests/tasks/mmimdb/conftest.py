"""Shared MM-IMDb fixtures: one HDF5 and one raw copy per session, and broken copies of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mango.testing.mmimdb import (
    write_mmimdb_hdf5_fixture,
    write_mmimdb_raw_fixture,
)


@pytest.fixture(scope="session")
def hdf5_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmimdb_hdf5_fixture(tmp_path_factory.mktemp("mmimdb_hdf5"))


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmimdb_raw_fixture(tmp_path_factory.mktemp("mmimdb_raw"))


@pytest.fixture
def hdf5_copy(hdf5_root: Path, tmp_path: Path) -> Path:
    """A private copy of the HDF5 fixture that a test may break."""
    return Path(shutil.copytree(hdf5_root, tmp_path / "hdf5"))


@pytest.fixture
def raw_copy(raw_root: Path, tmp_path: Path) -> Path:
    """A private copy of the raw fixture that a test may break."""
    return Path(shutil.copytree(raw_root, tmp_path / "raw"))


Replace = Callable[..., None]


def _replace(
    root: Path, key: str, make: Callable[[np.ndarray], np.ndarray] | None, **create: object
) -> None:
    with h5py.File(root / "multimodal_imdb.hdf5", "r+") as f:
        old = f[key]
        values, attrs = old[()], dict(old.attrs)
        del f[key]
        if make is not None:
            new = f.create_dataset(key, data=make(values), **create)
            for name, value in attrs.items():
                new.attrs[name] = value


@pytest.fixture
def replace_dataset() -> Replace:
    """``replace(root, key, make, **create_kwargs)``: replace HDF5 dataset ``key`` by
    ``make(old values)`` (attributes kept), or delete it when ``make`` is None."""
    return _replace
