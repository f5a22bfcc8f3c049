"""Test-time inference of a segmentation model: sliding windows, multi-scale and flip views.

:func:`predict` is what the NYUDv2 / SUN RGB-D tasks evaluate with: every view of
:func:`predict_logits` is covered by the overlapping windows of :func:`sliding_window_logits`
(the model is built for one crop size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mango.models.segmentation import SegmentationFusionModel, SegmentationOutput

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


def sliding_window_logits(
    model: SegmentationFusionModel, inputs: dict[str, Any], crop: tuple[int, int], stride: float
) -> tuple[Tensor, Tensor | None]:
    """Logits of any-size images from a model built for ``crop``: overlapping windows, averaged.

    Images smaller than the crop are zero-padded (the padding is cropped away again). Returns the
    logits (B, C, H, W) and the mean flow bits/dim over windows (``None`` without a flow).
    """
    image = inputs[model.modalities[0]]
    height, width = image.shape[-2:]
    pad_h, pad_w = max(crop[0] - height, 0), max(crop[1] - width, 0)
    padded = {m: F.pad(inputs[m], (0, pad_w, 0, pad_h)) for m in model.modalities}
    full_h, full_w = height + pad_h, width + pad_w
    step_h, step_w = max(1, int(crop[0] * stride)), max(1, int(crop[1] * stride))
    tops = sorted({*range(0, full_h - crop[0], step_h), full_h - crop[0]})
    lefts = sorted({*range(0, full_w - crop[1], step_w), full_w - crop[1]})
    logits = counts = None
    bits = []
    for top in tops:
        for left in lefts:
            window = {
                m: t[..., top : top + crop[0], left : left + crop[1]] for m, t in padded.items()
            }
            if "present" in inputs:
                window["present"] = inputs["present"]
            out = model(window)
            if logits is None:
                logits = out.logits.new_zeros(out.logits.shape[:2] + (full_h, full_w))
                counts = out.logits.new_zeros(1, 1, full_h, full_w)
            logits[..., top : top + crop[0], left : left + crop[1]] += out.logits
            counts[..., top : top + crop[0], left : left + crop[1]] += 1
            if out.bits_per_dim is not None:
                bits.append(out.bits_per_dim)
    assert logits is not None and counts is not None
    logits = (logits / counts)[..., :height, :width]
    return logits, torch.stack(bits).mean(0) if bits else None


def predict(
    model: SegmentationFusionModel,
    batch: dict[str, Any],
    num_classes: int,
    crop: tuple[int, int],
    stride: float,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> SegmentationOutput:
    """:func:`predict_logits` over ``scales`` (and ``flip``), each view by sliding ``crop``
    windows at ``stride``; ``bits_per_dim`` is the mean over every view (``None`` without a
    flow)."""
    bits: list[Tensor] = []

    def logits_fn(inputs: dict[str, Any]) -> Tensor:
        logits, b = sliding_window_logits(model, inputs, crop, stride)
        if b is not None:
            bits.append(b)
        return logits

    logits = predict_logits(logits_fn, batch, num_classes, scales, flip)
    return SegmentationOutput(
        logits=logits, bits_per_dim=torch.stack(bits).mean(0) if bits else None
    )
