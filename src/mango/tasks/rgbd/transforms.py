"""Train and eval transforms for RGB-D segmentation samples (pure torch).

A sample is the dict written by :class:`~mango.tasks.rgbd.data.RGBDSegmentationDataset`:
``rgb`` float (3, H, W) in [0, 1], ``depth`` float (1, H, W), ``mask`` int64 (H, W) with 255 =
ignore; other keys pass through unchanged. Every geometric step is applied with the same
parameters to rgb, depth and mask, so the three stay pixel-aligned.

Resampling uses the half-pixel convention for every modality: output pixel ``i`` samples the
input at ``(i + 0.5) / s - 0.5``; rgb is interpolated bilinearly (``align_corners=False``) and
depth and mask take the nearest input pixel (``nearest-exact``), so no label or depth value is
ever blended. Depth values are not rescaled with the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mango.models.encoders.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from mango.tasks.rgbd.layouts import IGNORE_INDEX
from mango.tasks.transforms import Sample, coin, mirror, pair


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def resize_sample(sample: Sample, size: tuple[int, int], mask: bool = True) -> Sample:
    """Resize rgb (bilinear), depth and (when ``mask``) mask (nearest-exact) to (height, width)."""
    out = dict(sample)
    if tuple(sample["rgb"].shape[-2:]) == size:
        return out
    out["rgb"] = F.interpolate(
        sample["rgb"][None], size=size, mode="bilinear", align_corners=False
    )[0]
    if "depth" in sample:
        out["depth"] = F.interpolate(sample["depth"][None], size=size, mode="nearest-exact")[0]
    if mask and "mask" in sample:
        labels = sample["mask"][None, None].float()
        out["mask"] = F.interpolate(labels, size=size, mode="nearest-exact")[0, 0].long()
    return out


def normalize_rgb(rgb: Tensor) -> Tensor:
    """ImageNet standardisation: ``(rgb - mean) / std`` per channel."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype, device=rgb.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype, device=rgb.device)[:, None, None]
    return (rgb - mean) / std


def _grey(rgb: Tensor) -> Tensor:
    """ITU-R 601 luma, shape (1, H, W)."""
    r, g, b = rgb.unbind(0)
    return (0.299 * r + 0.587 * g + 0.114 * b)[None]


class TrainTransform:
    """Random scale, pad, crop, flip and colour jitter, then ImageNet normalisation.

    For a sample of size (H, W) and crop (h, w):

    1. scale ``s ~ U(scale_range)``; resize to ``(round(s H), round(s W))`` (rgb bilinear,
       depth and mask nearest-exact);
    2. pad bottom/right up to at least (h, w): rgb and depth with 0, mask with 255 (ignored),
       and crop (h, w) at a uniformly random offset of the padded image;
    3. colour jitter on the rgb pixels that came from the image (not the padding), factors
       ``b, c, t ~ U(1 - j, 1 + j)`` applied in this order, each followed by clamping to
       [0, 1]: brightness ``x b``; contrast ``(x - m) c + m`` with ``m`` the mean grey level;
       saturation ``(x - g) t + g`` with ``g`` the per-pixel grey (0.299 R + 0.587 G + 0.114 B);
    4. flip horizontally with probability ½ when ``flip``;
    5. ``rgb = (rgb - mean) / std`` with the ImageNet mean and std.

    Since padding only adds rows and columns at the bottom/right, step 2 is computed as "crop
    the part of the window inside the image, jitter it, then pad": the same result, cheaper.
    Random numbers come from ``generator`` when given (reproducible), else from torch's global
    generator.

    Example:
        >>> sample = {"rgb": torch.rand(3, 20, 30), "depth": torch.rand(1, 20, 30),
        ...           "mask": torch.zeros(20, 30, dtype=torch.long)}
        >>> out = TrainTransform(16)(sample, torch.Generator().manual_seed(0))
        >>> out["rgb"].shape, out["depth"].shape, out["mask"].shape
        (torch.Size([3, 16, 16]), torch.Size([1, 16, 16]), torch.Size([16, 16]))
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        color_jitter: float = 0.2,
    ) -> None:
        self.crop_size = pair(crop_size)
        if min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        self.scale_range = (float(low), float(high))
        self.flip = flip
        self.color_jitter = float(color_jitter)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        height, width = sample["rgb"].shape[-2:]
        scale = _uniform(*self.scale_range, generator)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        out = self._crop(resize_sample(sample, size), generator)
        if self.color_jitter > 0:
            out["rgb"] = self.jitter(out["rgb"], generator)
        out = self._pad(out)
        if self.flip and coin(generator):
            out = mirror(out, ("rgb", "depth", "mask"))
        out["rgb"] = normalize_rgb(out["rgb"])
        return out

    def jitter(self, rgb: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random brightness, contrast and saturation (see the class docstring)."""
        j = self.color_jitter
        brightness, contrast, saturation = (_uniform(1 - j, 1 + j, generator) for _ in range(3))
        rgb = (rgb * brightness).clamp(0, 1)
        mean = _grey(rgb).mean()
        rgb = ((rgb - mean) * contrast + mean).clamp(0, 1)
        grey = _grey(rgb)
        return ((rgb - grey) * saturation + grey).clamp(0, 1)

    def _pad(self, sample: Sample) -> Sample:
        height, width = sample["rgb"].shape[-2:]
        pad_h, pad_w = max(0, self.crop_size[0] - height), max(0, self.crop_size[1] - width)
        if not pad_h and not pad_w:
            return sample
        out = dict(sample)
        fills = {"rgb": 0.0, "depth": 0.0, "mask": IGNORE_INDEX}
        for key, fill in fills.items():
            if key in out:
                out[key] = F.pad(out[key], (0, pad_w, 0, pad_h), value=fill)
        return out

    def _crop(self, sample: Sample, generator: torch.Generator | None) -> Sample:
        """The part inside the image of a random (h, w) window of the padded image."""
        height, width = sample["rgb"].shape[-2:]
        crop_h, crop_w = self.crop_size
        top = int(torch.randint(0, max(height, crop_h) - crop_h + 1, (), generator=generator))
        left = int(torch.randint(0, max(width, crop_w) - crop_w + 1, (), generator=generator))
        out = dict(sample)
        for key in ("rgb", "depth", "mask"):
            if key in out:
                out[key] = out[key][..., top : top + crop_h, left : left + crop_w]
        return out


class EvalTransform:
    """Deterministic evaluation transform: optional resize, then ImageNet normalisation of rgb.

    ``size=None`` keeps the image size; an int ``n`` resizes to (n, n) and a pair to
    (height, width), with rgb bilinear and depth nearest-exact (as :class:`TrainTransform`).
    The mask is resized with nearest-exact when ``resize_mask`` (so samples of different sizes
    can be batched); with ``resize_mask=False`` it keeps the original resolution and the caller
    upsamples the logits to it. Then ``rgb = (rgb - mean) / std`` (ImageNet).

    Example:
        >>> sample = {"rgb": torch.ones(3, 10, 20), "depth": torch.zeros(1, 10, 20),
        ...           "mask": torch.zeros(10, 20, dtype=torch.long)}
        >>> out = EvalTransform(8)(sample)
        >>> out["rgb"].shape, out["mask"].shape
        (torch.Size([3, 8, 8]), torch.Size([8, 8]))
        >>> round(float(out["rgb"][0, 0, 0]), 4)  # (1 - 0.485) / 0.229
        2.2489
    """

    def __init__(self, size: int | Sequence[int] | None = None, resize_mask: bool = True) -> None:
        self.size = None if size is None else pair(size)
        self.resize_mask = resize_mask

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if self.size is None:
            out = dict(sample)
        else:
            out = resize_sample(sample, self.size, self.resize_mask)
        out["rgb"] = normalize_rgb(out["rgb"])
        return out
