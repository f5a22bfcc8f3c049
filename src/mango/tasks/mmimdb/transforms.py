"""MM-IMDb pixel transforms: stored posters to RGB, RGB to network input, the training flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mango.models.encoders.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from mango.tasks.mmimdb.readers import CAFFE_BGR_MEAN
from mango.tasks.transforms import RandomFlip


def decode_caffe_image(array: np.ndarray) -> Tensor:
    """HDF5 ``images`` row (3, H, W), BGR minus :data:`CAFFE_BGR_MEAN` -> float32 RGB in [0, 1].

    Example:
        >>> bgr = np.array([10 - 103.939, 20 - 116.779, 30 - 123.68]).reshape(3, 1, 1)
        >>> (decode_caffe_image(bgr.round()) * 255).round().flatten().tolist()
        [30.0, 20.0, 10.0]
    """
    mean = np.asarray(CAFFE_BGR_MEAN, dtype=np.float64).reshape(3, 1, 1)
    bgr = np.asarray(array, dtype=np.float64) + mean
    rgb = np.clip(bgr[::-1] / 255.0, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(rgb))


def to_network_input(rgb: Tensor, size: int) -> Tensor:
    """(3, H, W) RGB in [0, 1] -> (3, size, size), bilinear (antialiased), ImageNet-normalised."""
    if rgb.shape[-2:] != (size, size):
        rgb = F.interpolate(
            rgb[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb - mean) / std


def poster_flip(enabled: bool) -> RandomFlip:
    """Random horizontal poster flips (training only; the plot is unchanged)."""
    return RandomFlip(("image",), enabled)
