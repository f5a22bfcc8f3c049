"""Atomic output: a failed write names the file, keeps what it would replace, leaves no temp file."""

from __future__ import annotations

import errno
import os

import pytest

from mango.errors import MangoError, OutputError
from mango.io import atomic_write_json, atomic_write_text


def _full_disk(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "out" / "metrics.json"
    atomic_write_json(target, {"step": 1})
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(OutputError) as error:
        atomic_write_json(target, {"step": 2})
    assert str(error.value) == (
        f"{target}: cannot write (No space left on device); the previous file is kept"
    )
    assert isinstance(error.value, MangoError) and isinstance(error.value, OSError)
    assert target.read_text() == '{\n  "step": 1\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=f"^{blocker / 'sub' / 'x.txt'}: cannot write"):
        atomic_write_text(blocker / "sub" / "x.txt", "x")


def test_other_errors_pass_through(tmp_path):
    def broken(fd: int) -> None:
        raise RuntimeError("not an OS error")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", broken)
        with pytest.raises(RuntimeError, match="not an OS error"):
            atomic_write_text(tmp_path / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []
