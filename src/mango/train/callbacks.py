"""What keeps a training run's files: the trainer's callbacks and logger.

- :class:`StopOnSigint`: Ctrl-C stops after the current step and keeps the last checkpoint;
- :func:`save_run` and :class:`SaveLast`: ``last.ckpt`` and ``weights.safetensors`` at the end of
  every interval, written by rank 0, with a failed write stopping every rank in one line;
- :class:`TolerantCSVLogger`: a metrics log that cannot be written warns and training goes on.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from mango.errors import OutputError
from mango.train.checkpoint import MangoCheckpointIO, export_safetensors


class TolerantCSVLogger(pl.loggers.CSVLogger):
    """Lightning's CSV logger, except that a log that cannot be written (a full disk) is one
    warning line and training goes on.

    Only rank 0 writes logs, so an error raised there would stop rank 0 alone and leave the other
    ranks waiting in their next collective. The checkpoint is what a run cannot do without: a
    checkpoint that cannot be written stops every rank with one line (:func:`save_run`).
    """

    warned = False

    def save(self) -> None:
        try:
            super().save()
        except OSError as error:
            if not self.warned:
                self.warned = True
                path = Path(self.log_dir) / "metrics.csv"
                reason = error.strerror or error
                print(
                    f"mango: warning: {path}: cannot write the log ({reason}); training goes on",
                    file=sys.stderr,
                    flush=True,
                )


class StopOnSigint(pl.Callback):
    """Ctrl-C (SIGINT) stops training after the current step instead of killing the process.

    Nothing is written for the unfinished interval: ``last.ckpt`` stays at the last interval
    boundary, from which ``--resume`` reproduces an uninterrupted run exactly. A second Ctrl-C
    interrupts immediately.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.requested:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def save_run(
    trainer: pl.Trainer,
    io: MangoCheckpointIO,
    checkpoint: Path,
    weights: Path,
    model: torch.nn.Module,
    config_yaml: str,
) -> None:
    """Refresh ``last.ckpt`` and ``weights.safetensors``; every rank calls it, rank 0 writes.

    A write that fails on rank 0 (a full disk, no permission) stops every rank with rank 0's
    one-line :class:`OutputError` (the other ranks' copies are marked duplicate, so the command
    line prints it once). Raised on rank 0 alone, it would leave the others waiting in their next
    collective. The files it would have replaced are kept.
    """
    trainer.save_checkpoint(checkpoint)  # rank 0 writes through ``io``, then all meet
    failure, io.failure = io.failure, None
    if failure is None and trainer.is_global_zero:
        try:
            export_safetensors(model.state_dict(), weights, config_yaml)
        except OutputError as error:
            failure = error
    message = trainer.strategy.broadcast(None if failure is None else str(failure), src=0)
    if failure is not None:
        raise failure
    if message is not None:
        raise OutputError(message, duplicate=True)


class SaveLast(pl.Callback):
    """At the end of every checkpoint interval (a training "epoch"), refresh ``last.ckpt``
    (atomically, through :class:`MangoCheckpointIO`) and ``weights.safetensors``
    (:func:`save_run`)."""

    def __init__(
        self,
        io: MangoCheckpointIO,
        checkpoint: Path,
        weights: Path,
        config_yaml: str,
        stopper: StopOnSigint,
    ) -> None:
        self.io, self.checkpoint, self.weights = io, checkpoint, weights
        self.config_yaml, self.stopper = config_yaml, stopper

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopper.requested:
            return  # an interval cut short by Ctrl-C: keep the boundary checkpoint
        model = pl_module.model
        save_run(trainer, self.io, self.checkpoint, self.weights, model, self.config_yaml)
