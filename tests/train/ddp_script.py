"""Run by test_ddp.py: train the smoke config on 2 CPU processes (gloo) and dump each rank's weights.

Lightning's DDP launcher re-executes this script for the second rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from mango.train.run import load_config, train


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


if __name__ == "__main__":
    config, out = Path(sys.argv[1]), Path(sys.argv[2])
    overrides = [
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_steps=6",
        "trainer.steps_per_checkpoint=3",
        "data.train_scenes=32",
        "data.val_scenes=4",
        "data.test_scenes=4",
    ]
    task, cfg = load_config(config, overrides)
    out.mkdir(parents=True, exist_ok=True)
    train(task, cfg, out / "run", progress=False, callbacks=[DumpRankWeights(out)])
