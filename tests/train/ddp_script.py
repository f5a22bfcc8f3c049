"""Run by test_ddp.py: train the smoke config on 2 CPU processes (gloo) and dump each rank's weights.

With a third argument ``gpu`` the two processes run on two CUDA devices (NCCL) instead.

Lightning's DDP launcher re-executes this script for the second rank. With a third argument
``nan-on-rank-1``, rank 1 turns one flow weight into NaN before step 3 and the script exits the
way ``mango train`` does: one ``mango: error: ...`` line and exit code 2. With
``bad-data-on-rank-1``, rank 1's loader meets an unreadable training sample at step 2 instead;
with ``full-disk-on-rank-0``, rank 0 (the one that writes) cannot write step 6's checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from mango.cli import main
from mango.train.run import load_config, train

OVERRIDES = [
    "trainer.devices=2",
    "trainer.strategy=ddp",
    "trainer.accelerator=cpu",
    "trainer.max_steps=6",
    "trainer.steps_per_checkpoint=3",
    "data.train_scenes=32",
    "data.val_scenes=4",
    "data.test_scenes=4",
]


class DumpRankWeights(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def _dump(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, self.out / f"{when}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dump(trainer, pl_module, "end")


class NanOnRankOne(pl.Callback):
    """Rank 1 only: a NaN weight in the flow from step 3 on (the other rank stays finite)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        if trainer.global_rank == 1 and trainer.global_step == 3:
            flow = pl_module.model.stages[2].fusion.flow
            with torch.no_grad():
                flow.layers[1].layers[3].query.weight.fill_(float("nan"))


def train_with_nan_on_rank_one(config: Path, out: Path) -> int:
    """``mango train`` (its error handling included) with :class:`NanOnRankOne` added."""
    import mango.train.run as run

    plain_train = run.train
    run.train = lambda *args, **kwargs: plain_train(*args, **kwargs, callbacks=[NanOnRankOne()])
    return train_in_cli(config, out)


def bad_data_on_rank_one() -> None:
    """Rank 1 only: the 13th training scene it loads is unreadable: its share of the global batch
    is 4, loaded once to initialise ActNorm and then for steps 0, 1 and 2 (the third of these)."""
    from mango.data.synthetic import SyntheticScenes
    from mango.errors import DataError

    plain_getitem = SyntheticScenes.__getitem__
    loads = [0]

    def getitem(self, index):
        if self.split == "train" and torch.distributed.get_rank() == 1:
            loads[0] += 1
            if loads[0] == 13:
                raise DataError(f"scene {index}: unreadable (injected by the test)")
        return plain_getitem(self, index)

    SyntheticScenes.__getitem__ = getitem


def full_disk_on_rank_zero() -> None:
    """Rank 0 only: writing a checkpoint of step 6 or later fails with "No space left"."""
    import errno

    plain_save = torch.save

    def save(obj, f, *args, **kwargs):
        step = obj.get("global_step", 0) if isinstance(obj, dict) else 0
        if step >= 6 and torch.distributed.get_rank() == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return plain_save(obj, f, *args, **kwargs)

    torch.save = save


def train_in_cli(config: Path, out: Path) -> int:
    """``mango train`` with its error handling, on 2 CPU processes."""
    args = ["train", "--config", str(config), "--out", str(out / "run")]
    return main([*args, *(f"--set={override}" for override in OVERRIDES)])


if __name__ == "__main__":
    config, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if sys.argv[3:] == ["nan-on-rank-1"]:
        sys.exit(train_with_nan_on_rank_one(config, out))
    if sys.argv[3:] == ["bad-data-on-rank-1"]:
        bad_data_on_rank_one()
        sys.exit(train_in_cli(config, out))
    if sys.argv[3:] == ["full-disk-on-rank-0"]:
        full_disk_on_rank_zero()
        sys.exit(train_in_cli(config, out))
    overrides = OVERRIDES
    if sys.argv[3:] == ["gpu"]:  # one process per CUDA device; Lightning's DDP then uses NCCL
        overrides = [o.replace("accelerator=cpu", "accelerator=gpu") for o in OVERRIDES]
    task, cfg = load_config(config, overrides)
    train(task, cfg, out / "run", progress=False, callbacks=[DumpRankWeights(out)])
