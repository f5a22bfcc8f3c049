"""Train and eval transforms for translation samples (pure torch, pix2pix / TokenFusion recipe).

A sample is the dict of :class:`~mango.tasks.taskonomy.data.TaskonomyPairs`: one
``(C, H, W)`` float tensor per input domain plus ``"target"``; every 3-D tensor of the sample is
an image and gets the same geometry, so inputs and target stay pixel-aligned. Other values
(``"name"``) pass through unchanged.

Resizing is bilinear with the half-pixel convention (``align_corners=False``) and antialiasing
when shrinking (as PIL's bilinear resize used by the peers). Values are not rescaled: images in
[-1, 1] stay in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mango.tasks.transforms import Sample, coin, pair


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    height, width = pair(size)
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, got {size}")
    return height, width


def _images(sample: Sample) -> list[str]:
    return [key for key, value in sample.items() if isinstance(value, Tensor) and value.ndim == 3]


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a ``(C, H, W)`` image to ``size`` = (height, width)."""
    if tuple(image.shape[-2:]) == size:
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]


class TrainTransform:
    """Resize to ``load_size``, random crop ``crop_size``, random horizontal flip.

    1. every image is resized to ``load_size`` (an int means a square, as the peers' 286 x 286);
    2. one crop offset ``(top, left)`` is drawn uniformly and applied to every image;
    3. with probability ½ (when ``flip``) every image is flipped left-right.

    Random numbers come from ``generator`` when given, else from torch's global generator.

    Example:
        >>> sample = {"rgb": torch.rand(3, 20, 30), "target": torch.rand(3, 20, 30), "name": "a"}
        >>> out = TrainTransform(24, 16)(sample, torch.Generator().manual_seed(0))
        >>> out["rgb"].shape, out["target"].shape, out["name"]
        (torch.Size([3, 16, 16]), torch.Size([3, 16, 16]), 'a')
    """

    def __init__(
        self,
        load_size: int | Sequence[int] = 286,
        crop_size: int | Sequence[int] = 256,
        flip: bool = True,
    ) -> None:
        self.load_size = _pair(load_size, "load_size")
        self.crop_size = _pair(crop_size, "crop_size")
        if any(c > s for c, s in zip(self.crop_size, self.load_size, strict=True)):
            raise ValueError(f"crop_size {crop_size} exceeds load_size {load_size}")
        self.flip = flip

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        (load_h, load_w), (crop_h, crop_w) = self.load_size, self.crop_size
        top = int(torch.randint(load_h - crop_h + 1, (), generator=generator))
        left = int(torch.randint(load_w - crop_w + 1, (), generator=generator))
        flip = self.flip and coin(generator)
        out = dict(sample)
        for key in _images(sample):
            image = resize_image(sample[key], self.load_size)
            image = image[:, top : top + crop_h, left : left + crop_w]
            out[key] = (image.flip(-1) if flip else image).contiguous()
        return out


class EvalTransform:
    """Resize every image to ``size`` (an int means a square); deterministic.

    Example:
        >>> out = EvalTransform(8)({"rgb": torch.rand(3, 16, 16), "target": torch.rand(3, 16, 16)})
        >>> out["rgb"].shape
        torch.Size([3, 8, 8])
    """

    def __init__(self, size: int | Sequence[int] = 256) -> None:
        self.size = _pair(size, "size")

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        out = dict(sample)
        for key in _images(sample):
            out[key] = resize_image(sample[key], self.size)
        return out
