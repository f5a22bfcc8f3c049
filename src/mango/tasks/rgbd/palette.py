"""A fixed colour palette for label maps (up to 256 labels; 255 = ignore is black)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from mango.tasks.rgbd.layouts import IGNORE_INDEX


@cache
def _palette() -> np.ndarray:
    colours = np.zeros((256, 3), dtype=np.uint8)
    for label in range(255):
        code, r, g, b = label + 1, 0, 0, 0
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colours[label] = (r, g, b)
    colours.flags.writeable = False
    return colours


def palette() -> np.ndarray:
    """The (256, 3) uint8 palette: row ``c`` is the colour of label ``c``.

    Label ``c < 255`` gets the PASCAL VOC colour of ``c + 1`` (the bits of ``c + 1`` spread
    over the high bits of R, G, B in turn), so every class has a distinct, non-black colour;
    label 255 (ignore) is black. The array is read-only and the same on every call.

    Example:
        >>> palette()[[0, 1, 2, 255]].tolist()
        [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 0]]
    """
    return _palette()


def colorize(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Label map (H, W) with values in 0..255 -> uint8 colour image (H, W, 3).

    Example:
        >>> colorize(np.array([[0, 255]])).tolist()
        [[[128, 0, 0], [0, 0, 0]]]
    """
    labels = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > IGNORE_INDEX):
        raise ValueError(f"labels must lie in 0..{IGNORE_INDEX}")
    return _palette()[labels.astype(np.intp)]
