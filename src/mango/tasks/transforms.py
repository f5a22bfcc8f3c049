"""Sample types and the transform steps shared by every task: sizes, coin flips, mirror images.

A sample is a dict of tensors (and names) as a task's Dataset returns it; a transform maps
``(sample, generator) -> sample`` and draws its random numbers from ``generator`` when given,
else from torch's global generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

Sample = dict[str, Any]
Transform = Callable[[Sample, torch.Generator | None], Sample]


def identity(sample: Sample, generator: torch.Generator | None) -> Sample:
    """The transform of a task whose samples need none."""
    return sample


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a size given as one int (a square) or two.

    Example:
        >>> pair(8), pair([4, 6])
        ((8, 8), (4, 6))
    """
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def coin(generator: torch.Generator | None) -> bool:
    """A fair coin: one ``torch.rand`` draw below ½."""
    return float(torch.rand((), generator=generator)) < 0.5


def mirror(sample: Sample, keys: Iterable[str]) -> Sample:
    """A copy of ``sample`` with the tensors under ``keys`` (those present) flipped left-right."""
    out = dict(sample)
    for key in keys:
        if key in out:
            out[key] = out[key].flip(-1)
    return out


class RandomFlip:
    """Flip ``keys`` left-right together with probability ½, in training only.

    Nothing is drawn without a ``generator`` (evaluation) or when ``enabled`` is False, so the
    transform is then the identity.

    Example:
        >>> flip = RandomFlip(("image",))
        >>> sample = {"image": torch.arange(3.0)[None]}
        >>> flip(sample, None)["image"].tolist()
        [[0.0, 1.0, 2.0]]
    """

    def __init__(self, keys: Sequence[str], enabled: bool = True) -> None:
        self.keys, self.enabled = tuple(keys), enabled

    def __call__(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        if self.enabled and generator is not None and coin(generator):
            return mirror(sample, self.keys)
        return sample
