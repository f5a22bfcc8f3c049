"""Multi-scale and flip test-time evaluation of a segmentation model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

LogitsFn = Callable[[dict[str, Any]], Tensor]


def _view(batch: dict[str, Any], size: tuple[int, int], flip: bool) -> dict[str, Any]:
    """The batch with rgb resized bilinearly and depth nearest-exact to ``size`` (then flipped)."""
    view = {key: value for key, value in batch.items() if key != "mask"}
    rgb = batch["rgb"]
    if tuple(rgb.shape[-2:]) != size:
        view["rgb"] = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        if "depth" in batch:
            view["depth"] = F.interpolate(batch["depth"], size=size, mode="nearest-exact")
    if flip:
        for key in ("rgb", "depth"):
            if key in view:
                view[key] = view[key].flip(-1)
    return view


@torch.no_grad()
def predict_logits(
    logits_fn: LogitsFn,
    batch: dict[str, Any],
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Tensor:
    """Average the class probabilities of several views of ``batch``; return log-probabilities.

    ``batch["rgb"]`` is (B, 3, H, W) and ``batch["depth"]`` (B, 1, H, W); other keys except
    ``mask`` are passed to ``logits_fn`` unchanged. For every scale ``s`` the inputs are resized
    to ``(round(s H), round(s W))`` (rgb bilinear, depth nearest-exact, ``align_corners=False``);
    with ``flip`` each scale is also evaluated on the horizontally flipped inputs and its output
    flipped back. Each view's logits (B, C, h, w), at any resolution, are upsampled bilinearly
    to (H, W) and turned into probabilities; over the ``V = len(scales) · (1 + flip)`` views::

        p = (1 / V) · Σ_v softmax(upsample(logits_v))
        returned = log p            (so softmax(returned) = p and argmax is the prediction)

    Probabilities are averaged (not logits) so that no single view's scale dominates. The
    result is float32 (B, C, H, W); it is computed without gradients.

    Example:
        >>> batch = {"rgb": torch.rand(2, 3, 8, 12), "depth": torch.rand(2, 1, 8, 12)}
        >>> fn = lambda b: torch.cat([b["rgb"], b["depth"]], 1)  # 4 "classes"
        >>> out = predict_logits(fn, batch, 4, scales=(0.5, 1.0, 1.5), flip=True)
        >>> out.shape, bool(torch.allclose(out.exp().sum(1), torch.ones(2, 8, 12)))
        (torch.Size([2, 4, 8, 12]), True)
    """
    if not scales:
        raise ValueError("scales must hold at least one scale")
    rgb = batch["rgb"]
    batch_size, (height, width) = rgb.shape[0], rgb.shape[-2:]
    total = torch.zeros(batch_size, num_classes, height, width, device=rgb.device)
    views = 0
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {scale}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        for flipped in (False, True) if flip else (False,):
            logits = logits_fn(_view(batch, size, flipped)).float()
            if logits.dim() != 4 or logits.shape[:2] != (batch_size, num_classes):
                raise ValueError(
                    f"logits_fn returned shape {tuple(logits.shape)}, expected "
                    f"({batch_size}, {num_classes}, h, w)"
                )
            if flipped:
                logits = logits.flip(-1)
            if tuple(logits.shape[-2:]) != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            total += logits.softmax(1)
            views += 1
    return (total / views).clamp_min(torch.finfo(torch.float32).tiny).log()
