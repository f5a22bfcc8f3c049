"""Which samples lack which modality: evaluation settings, seeded tables and training dropout.

- :class:`MissingSetting` is what ``mango eval|predict --missing MOD[,MOD] [--missing-rate R]
  --fill zero|mean|regress|impute`` ask for (the fills: :mod:`mango.models.missing`).
- :func:`absent_table` turns it into a per-sample table ``(N, K)`` of booleans (``True`` =
  absent), seeded and a pure function of ``(N, modalities, rate, seed)``: without a rate every
  listed modality is absent for every sample; with rate ``R`` and ``K`` listed modalities,
  ``round(R·N/K)`` samples lack each one (disjoint sets), the rest are complete. So
  ``--missing image,text --missing-rate 0.7`` is the missing-both case of Lee et al. (2023):
  35 % without image, 35 % without text, 30 % complete.
- :class:`MissingDataset` adds ``sample["present"] = {modality: bool}`` from such a table (or
  from a table file, :func:`read_table`); :class:`ModalityDropout` drops one modality of a
  training sample with probability ``data.modality_dropout``, drawn from the sample's own seeded
  generator (so resumed runs see the same drops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mango.errors import ConfigError, DataError
from mango.io import atomic_write_text
from mango.models.fusion import ImputationSettings
from mango.models.missing import FILLS, ImputationSummary, fill_problem, filling
from mango.models.task_model import TaskModel
from mango.tasks.base import Sample, Task, Transform

#: where imputation's gradient ascent starts (ImputationSettings.start)
STARTS = ("prior", "zero")


@dataclass(frozen=True)
class MissingSetting:
    """Absent modalities at evaluation: which, for what share of samples, and how they are filled."""

    modalities: tuple[str, ...]
    rate: float | None = None
    fill: str = "zero"
    seed: int = 0
    table: str | None = None
    impute: ImputationSettings = field(default_factory=ImputationSettings)

    @classmethod
    def parse(
        cls,
        missing: str | None,
        rate: float | None,
        fill: str | None,
        seed: int = 0,
        table: str | None = None,
        steps: int | None = None,
        start: str | None = None,
    ) -> MissingSetting | None:
        """From the CLI flags; ``None`` when no modality is missing. Bad values: one-line errors."""
        if (steps is not None or start is not None) and fill != "impute":
            flag = "--impute-steps" if steps is not None else "--impute-start"
            raise ConfigError(f"{flag}: only applies with --fill impute")
        if steps is not None and steps < 0:
            raise ConfigError(f"--impute-steps: expected an integer >= 0, got {steps}")
        if start is not None and start not in STARTS:
            raise ConfigError(f"--impute-start: expected one of {', '.join(STARTS)}, got {start!r}")
        if missing is None:
            if rate is not None or fill is not None or table is not None:
                given = (
                    "--missing-rate"
                    if rate is not None
                    else "--fill"
                    if fill
                    else "--missing-table"
                )
                raise ConfigError(f"{given}: needs --missing MOD[,MOD] (the absent modalities)")
            return None
        names = tuple(n.strip() for n in missing.split(",") if n.strip())
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"--missing: expected MOD[,MOD] (distinct names), got {missing!r}")
        if rate is not None and table is not None:
            raise ConfigError("--missing-table: replaces --missing-rate; give only one of them")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ConfigError(f"--missing-rate: expected a fraction in [0, 1], got {rate}")
        if fill is not None and fill not in FILLS:
            raise ConfigError(f"--fill: expected one of {', '.join(FILLS)}, got {fill!r}")
        defaults = ImputationSettings()
        impute = replace(
            defaults,
            steps=defaults.steps if steps is None else steps,
            start=start or defaults.start,
        )
        return cls(names, rate, fill or "zero", seed, table, impute)

    def check(self, modalities: Sequence[str]) -> None:
        """Every absent modality must be one the model uses."""
        unknown = [m for m in self.modalities if m not in modalities]
        if unknown:
            raise ConfigError(
                f"--missing: {unknown[0]!r} is not a modality of this model "
                f"(it uses {', '.join(modalities)})"
            )

    def describe(self) -> dict[str, Any]:
        """The setting as recorded in the metrics JSON."""
        return {
            "missing": list(self.modalities),
            "missing_rate": 1.0 if self.rate is None else self.rate,
            "fill": self.fill,
            "missing_seed": self.seed,
            **({"missing_table": self.table} if self.table else {}),
            **(
                {"impute_steps": self.impute.steps, "impute_start": self.impute.start}
                if self.fill == "impute"
                else {}
            ),
        }


def absent_table(
    count: int,
    modalities: Sequence[str],
    rate: float | None,
    seed: int = 0,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """``(count, K)`` booleans: sample ``i`` lacks ``modalities[k]`` (see the module doc).

    The absent samples are taken in ``order`` (a permutation of ``0..count-1``; default one
    drawn from ``seed``), dealt out in turn: positions ``k, k+K, k+2K, ...`` go to modality
    ``k``, the first ``round(rate·count/K)`` of them absent. So a lower rate drops a subset of
    the samples a higher rate drops. A task may ship its order (MM-IMDb's protocol does).

    Example:
        >>> table = absent_table(10, ["image", "text"], rate=0.6, seed=0)
        >>> table.sum(0).tolist(), int((table.sum(1) > 1).sum())
        ([3, 3], 0)
        >>> absent_table(3, ["depth"], rate=None).ravel().tolist()
        [True, True, True]
    """
    k = len(modalities)
    if rate is None:
        return np.ones((count, k), dtype=bool)
    per = int(round(rate * count / k))
    if per * k > count:
        per = count // k
    if order is None:
        order = np.random.default_rng(seed).permutation(count)
    elif sorted(np.asarray(order).tolist()) != list(range(count)):
        raise ValueError(f"order must be a permutation of 0..{count - 1}")
    table = np.zeros((count, k), dtype=bool)
    for j in range(k):  # interleaved, so a lower rate drops a subset of a higher rate's
        table[np.asarray(order)[j::k][:per], j] = True
    return table


def read_table(path: str | Path, count: int, modalities: Sequence[str]) -> np.ndarray:
    """A missing table file: one line per sample, the absent modalities comma-separated (or
    ``-`` for a complete sample), in the order of the evaluated split."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing table not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != count:
        raise DataError(f"{path}: {len(lines)} lines for a split of {count} samples")
    table = np.zeros((count, len(modalities)), dtype=bool)
    for i, line in enumerate(lines):
        names = [] if line.strip() == "-" else [n.strip() for n in line.split(",")]
        for name in names:
            if name not in modalities:
                raise DataError(f"{path} line {i + 1}: unknown modality {name!r}")
            table[i, list(modalities).index(name)] = True
    return table


def write_table(path: str | Path, table: np.ndarray, modalities: Sequence[str]) -> None:
    """Write ``table`` in :func:`read_table`'s format (atomically)."""
    rows = [",".join(m for m, a in zip(modalities, row, strict=True) if a) or "-" for row in table]
    atomic_write_text(path, "".join(f"{row}\n" for row in rows))


class MissingDataset(Dataset[Sample]):
    """``base`` with ``sample["present"]`` from an absent table over ``modalities`` (combined
    with a ``present`` the sample already has, e.g. from :class:`ModalityDropout`)."""

    def __init__(
        self,
        base: Dataset[Sample],
        modalities: Sequence[str],
        all_modalities: Sequence[str],
        table: np.ndarray,
        source: str = "seeded",
    ) -> None:
        self.base, self.table, self.source = base, table, source
        self.modalities, self.all_modalities = list(modalities), list(all_modalities)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Sample:
        sample = dict(self.base[key])
        index = key[0] if isinstance(key, tuple) else key
        absent = {m for m, a in zip(self.modalities, self.table[index], strict=True) if a}
        present = sample.get("present") or dict.fromkeys(self.all_modalities, True)
        sample["present"] = {m: bool(present[m]) and m not in absent for m in self.all_modalities}
        return sample


def with_missing(
    dataset: Dataset[Sample],
    setting: MissingSetting,
    modalities: Sequence[str],
    order: np.ndarray | None = None,
) -> MissingDataset:
    """``dataset`` (a split) with the absent modalities of ``setting``; ``order`` as in
    :func:`absent_table` (a table file, when ``setting`` names one, takes precedence)."""
    setting.check(modalities)
    count = len(dataset)  # type: ignore[arg-type]
    if setting.table is not None:
        table, source = read_table(setting.table, count, setting.modalities), "table file"
    else:
        table = absent_table(count, setting.modalities, setting.rate, setting.seed, order)
        source = "seeded" if order is None else "shipped order"
    return MissingDataset(dataset, setting.modalities, modalities, table, source)


class ModalityDropout:
    """Training transform: with probability ``p``, one modality (uniform) of the sample is absent.

    Without a generator (evaluation) nothing is dropped. Every sample gets ``present`` so that
    batches collate.
    """

    def __init__(self, transform: Transform, modalities: Sequence[str], p: float) -> None:
        self.transform, self.modalities, self.p = transform, list(modalities), p

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        sample = dict(self.transform(sample, generator))
        present = dict.fromkeys(self.modalities, True)
        if generator is not None and self.p > 0:
            draw = torch.rand(2, generator=generator)
            if float(draw[0]) < self.p:
                present[self.modalities[int(draw[1] * len(self.modalities))]] = False
        sample["present"] = present
        return sample


def filling_for(
    model: torch.nn.Module, missing: MissingSetting | None
) -> AbstractContextManager[ImputationSummary]:
    """:func:`~mango.models.missing.filling` with ``missing``'s fill and imputation settings
    (the zero rule without ``missing``)."""
    return filling(model, missing.fill, missing.impute) if missing else filling(model, "zero")


def missing_wrap(
    task: Task[Any],
    cfg: Any,
    split: str,
    model: TaskModel,
    missing: MissingSetting | None,
    checkpoint: str | Path,
) -> Callable[[Dataset[Sample]], Dataset[Sample]] | None:
    """The eval-dataset wrapper that makes ``missing``'s modalities absent (``None``: none).

    The table follows the task's shipped order of the split when it has one
    (:meth:`~mango.tasks.base.Task.missing_order`), else a seeded one. A fill the model
    cannot make (:func:`~mango.models.missing.fill_problem`) is a one-line error."""
    if missing is None:
        return None
    modalities = list(model.modalities)
    missing.check(modalities)
    problem = fill_problem(model, missing.fill)
    if problem is not None:
        raise ConfigError(f"--fill {missing.fill}: {checkpoint} {problem}")

    def wrap(dataset: Dataset[Sample]) -> Dataset[Sample]:
        order = task.missing_order(cfg, split, len(dataset))  # type: ignore[arg-type]
        return with_missing(dataset, missing, modalities, order)

    return wrap
