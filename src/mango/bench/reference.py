"""The official MANGO formulation, written densely as a baseline (never used for training).

Masked softmax attention, the official ``A + I`` matrix, log-det by ``slogdet(A) * L / 2`` (the
official factor; docs/design.md §5) and the inverse by ``pinv``: what the paper's code does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mango.flows import InvertibleCrossAttention


def reference_forward(layer: InvertibleCrossAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """Official-style forward of an MMCA/IMCA layer: dense A, ``slogdet`` log-det."""
    x1, x2 = x[:, layer.idx1], x[:, layer.idx2]
    q, k = layer._queries_keys(x1)
    s = q @ k.transpose(1, 2) / layer.temperature
    s = s.masked_fill(layer.mask, -math.inf)
    a = torch.softmax(s, dim=-1) + torch.eye(layer.l2, dtype=x.dtype, device=x.device)
    y2 = a @ x2
    logdet = torch.linalg.slogdet(a)[1] * layer.length / 2
    return layer._merge(x1, y2), logdet


def reference_inverse(layer: InvertibleCrossAttention, y: Tensor) -> Tensor:
    """Official-style inverse: recompute the dense A, multiply by its pseudo-inverse."""
    y1, y2 = y[:, layer.idx1], y[:, layer.idx2]
    q, k = layer._queries_keys(y1)
    s = q @ k.transpose(1, 2) / layer.temperature
    s = s.masked_fill(layer.mask, -math.inf)
    a = torch.softmax(s, dim=-1) + torch.eye(layer.l2, dtype=y.dtype, device=y.device)
    return layer._merge(y1, torch.linalg.pinv(a) @ y2)
