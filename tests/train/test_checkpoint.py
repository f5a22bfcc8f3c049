"""Checkpoint reading: one-line errors for every way a checkpoint can be unusable, no code run."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import pytest
import torch
from torch.torch_version import TorchVersion

from mango.errors import CheckpointError
from mango.train.checkpoint import (
    MangoCheckpointIO,
    check_architecture,
    metadata,
    read_checkpoint,
)


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


def test_pickled_code_is_refused_without_running(tmp_path, payload):
    path = _save(tmp_path / "evil.ckpt", {"state_dict": {}, "mango": payload})
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: refused: it holds a pickled exec"), message
    assert "nothing from this file was run" in message and "\n" not in message
    assert not payload.marker.exists()


def test_a_checkpoint_is_plain_data_apart_from_the_version_of_earlier_ones(tmp_path):
    """New checkpoints need no allow-list; earlier ones (torch's TorchVersion) still load."""
    new = metadata({"task": "synthetic"})
    assert type(new["versions"]["torch"]) is str
    path = _save(tmp_path / "new.ckpt", {"state_dict": {"w": torch.ones(2)}, "mango": new})
    assert torch.load(path, weights_only=True)["mango"] == new
    earlier = {**new, "versions": {**new["versions"], "torch": torch.__version__}}
    assert isinstance(earlier["versions"]["torch"], TorchVersion)
    path = _save(tmp_path / "earlier.ckpt", {"state_dict": {"w": torch.ones(2)}, "mango": earlier})
    assert read_checkpoint(path)["mango"]["versions"]["torch"] == str(torch.__version__)


def test_torch_without_safe_globals_reads_new_checkpoints_and_refuses_code(
    tmp_path, monkeypatch, payload
):
    """torch < 2.5 has no ``safe_globals``: what this version writes still loads, code does not."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    new = {"state_dict": {"w": torch.ones(2)}, "mango": metadata({"task": "synthetic"})}
    assert read_checkpoint(_save(tmp_path / "new.ckpt", new))["state_dict"]["w"].sum() == 2
    evil = _save(tmp_path / "evil.ckpt", {"state_dict": {}, "mango": payload})
    with pytest.raises(CheckpointError, match="refused: it holds a pickled exec"):
        read_checkpoint(evil)
    assert not payload.marker.exists()


def test_non_dict_entries_are_not_a_mango_checkpoint(tmp_path):
    path = _save(tmp_path / "odd.ckpt", {"state_dict": {}, "mango": 3})
    with pytest.raises(CheckpointError, match="not a MANGO checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_lightning_restores_through_read_checkpoint(tmp_path, payload, strategy):
    """What ``Trainer.fit(ckpt_path=...)`` calls, even when asked for ``weights_only=False``."""
    path = _save(tmp_path / "evil.ckpt", {"state_dict": {}, "mango": payload})
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2 if strategy == "ddp" else 1,
        strategy=strategy,
        plugins=[MangoCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
    )
    # newer Lightning passes ``weights_only`` here; 2.4 has no such argument
    asked = {"weights_only": False}
    if "weights_only" not in inspect.signature(trainer.strategy.load_checkpoint).parameters:
        asked = {}
    with pytest.raises(CheckpointError, match="refused: it holds a pickled exec"):
        trainer.strategy.load_checkpoint(path, **asked)
    assert not payload.marker.exists()
