"""Broken inputs at evaluation: ``mango eval --corrupt MOD:KIND[:STRENGTH]``.

A seeded share of the evaluated samples (``--corrupt-share``, default 0.5) gets one modality
corrupted, after the task's transform, so in the model's normalised input space. With ``x``
that sample's input of modality ``MOD``, ``a`` the strength and ``ε`` standard normal noise
drawn for the sample, the kinds are:

=========  ==========================================================  ================
kind       corrupted input                                              default ``a``
=========  ==========================================================  ================
``noise``  ``x + a·ε`` (a sensor's noise on top of its signal)          1.0
``blank``  ``a`` everywhere (a dead sensor: 0 is the normalised mean)   0.0
``shift``  ``x`` moved by ``round(a·H)`` rows and ``round(a·W)``        0.125
           columns, each direction a fair coin, edges replicated
           (the last two axes; a vector's one axis)
``swap``   another sample's input of ``MOD`` (a mixed-up pairing),      none
           resized to this one's size when they differ
``scale``  ``a·x`` (a wrong gain)                                       2.0
=========  ==========================================================  ================

A text input (MM-IMDb's plot) takes ``blank`` (the empty string) and ``swap`` only.

Which samples are corrupted is a pure function of ``(N, share, seed)``: the first
``round(share·N)`` of a permutation drawn from ``--corrupt-seed``. Each corrupted sample's own
draws (noise, shift directions, swap partner) come from a generator seeded by
``(seed, index)``, so the same seed corrupts the same samples the same way. Every sample gets
``corrupted`` (bool) and ``position`` (its index in the split), which the evaluation scores
(:mod:`mango.train.detect`).

Example:
    >>> setting = CorruptSetting.parse("depth:noise:0.5", None, 0)
    >>> setting.kind, setting.strength, setting.share
    ('noise', 0.5, 0.5)
    >>> int(corrupted_rows(6, 0.5, seed=0).sum())
    3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mango.errors import ConfigError, DataError
from mango.tasks.base import Sample

#: the kinds of corruption and their default strengths (``None``: takes none)
KINDS: dict[str, float | None] = {
    "noise": 1.0,
    "blank": 0.0,
    "shift": 0.125,
    "swap": None,
    "scale": 2.0,
}
#: the default share of corrupted samples
DEFAULT_SHARE = 0.5


@dataclass(frozen=True)
class CorruptSetting:
    """Which modality is corrupted, how, for what share of the samples, with what seed."""

    modality: str
    kind: str
    strength: float | None
    share: float = DEFAULT_SHARE
    seed: int = 0

    @classmethod
    def parse(
        cls, text: str | None, share: float | None, seed: int | None
    ) -> CorruptSetting | None:
        """From ``--corrupt MOD:KIND[:STRENGTH]``, ``--corrupt-share`` and ``--corrupt-seed``;
        ``None`` without ``--corrupt``. Bad values: one-line errors naming the flag."""
        if text is None:
            for flag, value in (("--corrupt-share", share), ("--corrupt-seed", seed)):
                if value is not None:
                    raise ConfigError(f"{flag}: needs --corrupt MOD:KIND[:STRENGTH]")
            return None
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0].strip():
            raise ConfigError(f"--corrupt: expected MOD:KIND[:STRENGTH], got {text!r}")
        modality, kind = parts[0].strip(), parts[1].strip()
        if kind not in KINDS:
            raise ConfigError(f"--corrupt: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        strength = KINDS[kind]
        if len(parts) == 3:
            if strength is None:
                raise ConfigError(f"--corrupt: {kind} takes no strength, got {parts[2]!r}")
            try:
                strength = float(parts[2])
            except ValueError:
                raise ConfigError(
                    f"--corrupt: the strength must be a number, got {parts[2]!r}"
                ) from None
            if not np.isfinite(strength) or (kind == "shift" and not 0 <= strength <= 1):
                raise ConfigError(f"--corrupt: {kind} strength out of range, got {parts[2]!r}")
        share = DEFAULT_SHARE if share is None else share
        if not 0.0 < share <= 1.0:
            raise ConfigError(f"--corrupt-share: expected a fraction in (0, 1], got {share}")
        if seed is not None and seed < 0:
            raise ConfigError(f"--corrupt-seed: expected an integer >= 0, got {seed}")
        return cls(modality, kind, strength, share, seed or 0)

    def check(self, modalities: Sequence[str]) -> None:
        """The corrupted modality must be one the model uses."""
        if self.modality not in modalities:
            raise ConfigError(
                f"--corrupt: {self.modality!r} is not a modality of this model "
                f"(it uses {', '.join(modalities)})"
            )

    def describe(self) -> dict[str, Any]:
        """The setting as recorded in the metrics JSON (``corrupt``)."""
        return {
            "modality": self.modality,
            "kind": self.kind,
            "strength": self.strength,
            "share": self.share,
            "seed": self.seed,
        }


def corrupted_rows(count: int, share: float, seed: int = 0) -> np.ndarray:
    """``(count,)`` booleans: the first ``round(share·count)`` of a seeded permutation."""
    rows = np.zeros(count, dtype=bool)
    rows[np.random.default_rng(seed).permutation(count)[: int(round(share * count))]] = True
    return rows


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator of sample ``index``'s corruption, seeded by ``(seed, index)``."""
    state = np.random.SeedSequence([seed, index, 0x5EED]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def shift_edges(x: Tensor, offsets: Sequence[int]) -> Tensor:
    """``x`` moved by ``offsets`` along its last ``len(offsets)`` axes, edges replicated:
    ``out[..., i, j] = x[..., clip(i − dy), clip(j − dx)]``."""
    out = x
    for axis, offset in zip(range(-len(offsets), 0), offsets, strict=True):
        size = x.shape[axis]
        index = (torch.arange(size) - offset).clamp(0, size - 1)
        out = out.index_select(axis, index.to(x.device))
    return out


def corrupt_input(
    x: Tensor | str,
    kind: str,
    strength: float | None,
    generator: torch.Generator,
    other: Tensor | str | None = None,
) -> Tensor | str:
    """One sample's input ``x`` corrupted by ``kind`` (formulas in the module doc); ``other`` is
    the swap partner's input.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> corrupt_input(torch.ones(2), "scale", 3.0, g).tolist()
        [3.0, 3.0]
        >>> corrupt_input(torch.ones(2), "blank", 0.0, g).tolist()
        [0.0, 0.0]
    """
    if kind == "swap":
        if isinstance(x, Tensor) and isinstance(other, Tensor) and other.shape != x.shape:
            if x.dim() < 3 or other.shape[:-2] != x.shape[:-2]:
                raise DataError(
                    f"--corrupt swap: inputs of shapes {tuple(other.shape)} and {tuple(x.shape)}"
                )
            other = F.interpolate(other[None].float(), size=x.shape[-2:], mode="nearest")[0]
            other = other.to(x.dtype)
        return other if other is not None else x
    if isinstance(x, str):
        if kind == "blank":
            return ""
        raise ConfigError(
            f"--corrupt: {kind} needs an array input; this one is text (use blank or swap)"
        )
    assert strength is not None
    if kind == "noise":
        return x + strength * torch.randn(x.shape, generator=generator).to(x)
    if kind == "blank":
        return torch.full_like(x, strength)
    if kind == "scale":
        return x * strength
    if kind == "shift":
        axes = x.shape[-2:] if x.dim() >= 2 else x.shape[-1:]
        signs = torch.randint(0, 2, (len(axes),), generator=generator) * 2 - 1
        return shift_edges(
            x, [int(s) * int(round(strength * n)) for s, n in zip(signs, axes, strict=True)]
        )
    raise ValueError(f"unknown corruption {kind!r}")


class CorruptDataset(Dataset[Sample]):
    """``base`` (a split, items keyed ``index`` or ``(index, seed)``) with ``setting``'s
    modality corrupted in the samples that ``rows`` marks; every sample gets ``corrupted`` and
    ``position``."""

    def __init__(self, base: Dataset[Sample], setting: CorruptSetting, rows: np.ndarray) -> None:
        self.base, self.setting, self.rows = base, setting, rows

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Sample:
        index = key[0] if isinstance(key, tuple) else key
        sample = dict(self.base[key])
        corrupted = bool(self.rows[index])
        if corrupted:
            name, setting = self.setting.modality, self.setting
            if name not in sample:
                raise DataError(f"--corrupt: the samples have no input {name!r}")
            generator = sample_generator(setting.seed, index)
            other = None
            if setting.kind == "swap":
                partner = self.partner(index, generator)
                other = self.base[(partner, *key[1:]) if isinstance(key, tuple) else partner][name]
            sample[name] = corrupt_input(
                sample[name], setting.kind, setting.strength, generator, other
            )
        sample["corrupted"] = corrupted
        sample["position"] = index
        return sample

    def partner(self, index: int, generator: torch.Generator) -> int:
        """The swap partner of sample ``index``: another sample, uniform over the split."""
        count = len(self)
        if count < 2:
            raise DataError("--corrupt swap: needs 2+ samples in the split")
        step = 1 + int(torch.randint(0, count - 1, (1,), generator=generator))
        return (index + step) % count


def with_corruption(
    dataset: Dataset[Sample], setting: CorruptSetting, modalities: Sequence[str]
) -> CorruptDataset:
    """``dataset`` (a split) with ``setting``'s corruption of a seeded share of its samples."""
    setting.check(modalities)
    rows = corrupted_rows(len(dataset), setting.share, setting.seed)  # type: ignore[arg-type]
    return CorruptDataset(dataset, setting, rows)


def corruption_wrap(
    setting: CorruptSetting, modalities: Sequence[str]
) -> Callable[[Dataset[Sample]], CorruptDataset]:
    """The eval-dataset wrapper of ``setting`` for a model of ``modalities`` (checked now)."""
    setting.check(modalities)
    return lambda dataset: with_corruption(dataset, setting, modalities)
