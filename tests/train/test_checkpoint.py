"""Checkpoint reading: one-line errors for every way a checkpoint can be unusable."""

from __future__ import annotations

import pytest
import torch

from mango.errors import CheckpointError
from mango.train.checkpoint import check_architecture, read_checkpoint


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_garbage_file(tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(path)


def test_foreign_checkpoint(tmp_path):
    path = _save(tmp_path / "other.ckpt", {"state_dict": {}})
    with pytest.raises(CheckpointError, match="not a MANGO checkpoint"):
        read_checkpoint(path)


def test_newer_version_is_refused(tmp_path):
    path = _save(tmp_path / "new.ckpt", {"state_dict": {}, "mango": {"version": "99.0.0"}})
    with pytest.raises(CheckpointError, match="newer than the installed"):
        read_checkpoint(path)


def test_architecture_mismatch_names_the_key():
    model = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(4)}
    with pytest.raises(CheckpointError, match=r"'a.weight' has shape \(3, 3\)"):
        check_architecture(
            {"a.weight": torch.zeros(3, 3), "b.bias": torch.zeros(4)}, model, "x.ckpt"
        )
    with pytest.raises(CheckpointError, match="lacks 'b.bias'"):
        check_architecture({"a.weight": torch.zeros(2, 3)}, model, "x.ckpt")
    with pytest.raises(CheckpointError, match="unexpected key 'c'"):
        check_architecture({**model, "c": torch.zeros(1)}, model, "x.ckpt")
