"""Data loading with explicit, resumable randomness.

Every training sample is drawn as ``(index, seed)`` from an endless stream of seeded permutations,
and its augmentation uses a generator seeded by that ``seed``. A training "epoch" is
``steps_per_checkpoint`` steps; Lightning calls ``set_epoch`` on the sampler, so a run resumed
from the checkpoint written at the end of epoch ``e`` sees exactly the batches an uninterrupted
run would have seen, on every rank.

Optimizer step ``s`` uses the samples at global positions ``s·G … (s+1)·G − 1`` of that stream
(``G`` = ``trainer.global_batch``) whatever the number of devices and the gradient accumulation
(:mod:`mango.train.batch`): only which process and which micro-batch computes each sample
changes with the hardware, so a run resumed on another device count keeps its data order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mango.config import RunConfig
from mango.errors import ConfigError, DataError
from mango.tasks.base import Sample, Task, Transform
from mango.train.batch import BatchPlan
from mango.train.missing import MissingSetting, ModalityDropout, with_missing


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from integers."""
    return int(
        np.random.SeedSequence([v & 0xFFFFFFFF for v in values]).generate_state(2, np.uint64)[0]
        >> 1
    )


class SeededSampler(Sampler[tuple[int, int]]):
    """Yield ``samples_per_epoch`` pairs ``(index, seed)`` per epoch for one rank.

    Global position ``p = (epoch * samples_per_epoch + k) * world_size + rank`` maps to data pass
    ``p // length`` and to element ``p % length`` of that pass's permutation (seeded by ``seed`` and
    the pass), so ranks never overlap and the stream is a pure function of ``(seed, epoch)``.

    Example:
        >>> s = SeededSampler(length=5, samples_per_epoch=4, seed=0)
        >>> s.set_epoch(1)
        >>> [i for i, _ in s] == [i for i, _ in s]
        True
    """

    def __init__(
        self, length: int, samples_per_epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if length == 0:
            raise DataError("the training set is empty")
        self.length, self.samples_per_epoch, self.seed = length, samples_per_epoch, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _permutation(self, data_pass: int) -> np.ndarray:
        if data_pass not in self._cache:
            self._cache = {
                data_pass: np.random.default_rng(_mix(self.seed, data_pass)).permutation(
                    self.length
                )
            }
        return self._cache[data_pass]

    def __iter__(self):
        for k in range(self.samples_per_epoch):
            p = (self.epoch * self.samples_per_epoch + k) * self.world_size + self.rank
            data_pass, position = divmod(p, self.length)
            yield int(self._permutation(data_pass)[position]), _mix(self.seed, 7919, p)

    def __len__(self) -> int:
        return self.samples_per_epoch


class ShardSampler(Sampler[tuple[int, None]]):
    """Evaluation order: every ``world_size``-th sample from ``rank``, no augmentation seed."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return ((i, None) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TransformedDataset(Dataset[Sample]):
    """``dataset[(index, seed)]`` -> ``transform(base[index], Generator(seed) or None)``."""

    def __init__(self, base: Dataset[Sample], transform: Transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int | None]) -> Sample:
        index, seed = key
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.transform(self.base[index], generator)


#: the key of a batch that holds, instead of tensors, the :class:`DataError` of one of its samples
DATA_FAILURE = "data_failure"


class Reported(Dataset[Sample]):
    """A dataset whose :class:`DataError` is returned as a value, not raised in the loader.

    In a distributed run a rank whose loader raised would leave the other ranks waiting in the
    next collective. Delivered to the step instead (:func:`collate` makes it the whole batch), the
    error reaches :func:`mango.train.module.first_failure`, and every rank stops with it.
    """

    def __init__(self, base: Dataset[Sample]) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Sample | DataError:
        try:
            return self.base[key]
        except DataError as error:
            return error


def collate(samples: list[Sample | DataError]) -> Sample:
    """``default_collate``; a batch with a failed sample is ``{DATA_FAILURE: its error}``."""
    failed = next((s for s in samples if isinstance(s, DataError)), None)
    return default_collate(samples) if failed is None else {DATA_FAILURE: failed}


def eval_loader(
    task: Task[Any],
    cfg: RunConfig,
    split: str,
    rank: int = 0,
    world_size: int = 1,
    wrap: Callable[[Dataset[Sample]], Dataset[Sample]] | None = None,
    reported: bool = False,
) -> DataLoader[Any]:
    """A deterministic loader over ``split`` (sharded by rank); ``wrap`` may wrap the dataset
    (e.g. :func:`mango.train.missing.with_missing`); ``reported``: data errors come as batches
    (:class:`Reported`)."""
    dataset: Dataset[Sample] = TransformedDataset(
        task.dataset(cfg, split), task.transform(cfg, train=False)
    )
    if wrap is not None:
        dataset = wrap(dataset)
    return DataLoader(
        Reported(dataset) if reported else dataset,
        batch_size=cfg.trainer.eval_batch,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=cfg.trainer.num_workers,
        collate_fn=collate if reported else None,
    )


class MangoDataModule(pl.LightningDataModule):
    """Training and validation loaders of a task, sharded by the trainer's rank."""

    def __init__(self, task: Task[Any], cfg: RunConfig, modalities: Sequence[str] = ()) -> None:
        """``modalities``: the model's, among which ``data.modality_dropout`` drops one."""
        super().__init__()
        self.task, self.cfg, self.modalities = task, cfg, list(modalities)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader[Any]:
        cfg, (rank, world) = self.cfg, self._rank_world()
        transform = self.task.transform(cfg, train=True)
        dropout = cfg.data.modality_dropout
        if dropout > 0:
            if len(self.modalities) < 2:
                raise ConfigError(
                    f"data.modality_dropout: the model uses {len(self.modalities)} modality; "
                    "dropping one needs 2+"
                )
            transform = ModalityDropout(transform, self.modalities, dropout)
        dataset: Dataset[Sample] = TransformedDataset(self.task.dataset(cfg, "train"), transform)
        if cfg.data.missing:  # a fixed table, e.g. Lee et al.'s protocol trains at rate η
            setting = MissingSetting(
                tuple(cfg.data.missing), cfg.data.missing_rate, seed=cfg.trainer.seed
            )
            order = self.task.missing_order(cfg, "train", len(dataset))  # type: ignore[arg-type]
            try:
                dataset = with_missing(dataset, setting, self.modalities, order)
            except ConfigError as error:
                raise ConfigError(str(error).replace("--missing:", "data.missing:", 1)) from None
        plan = BatchPlan.of(cfg.trainer)
        sampler = SeededSampler(
            len(dataset),
            cfg.trainer.steps_per_checkpoint * plan.per_device,
            cfg.trainer.seed,
            rank,
            world,
        )
        return DataLoader(
            Reported(dataset),
            batch_size=plan.micro_batch,
            sampler=sampler,
            num_workers=cfg.trainer.num_workers,
            drop_last=True,
            persistent_workers=False,
            collate_fn=collate,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        return eval_loader(self.task, self.cfg, "val", *self._rank_world(), reported=True)
