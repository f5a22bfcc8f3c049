"""Per-sample scores of how unusual an input is, for telling corrupted inputs from clean ones.

Every score is oriented so that **higher means more anomalous**:

- :func:`softmax_scores` (a softmax head, ``logits`` ``(B, K, ...)`` with the classes on dim 1):
  ``neg_msp = −max_k softmax(l)_k`` (the negated maximum softmax probability) and
  ``energy = −log Σ_k exp(l_k)``; for dense outputs (segmentation) both are averaged over the
  pixels of the image.
- :func:`multilabel_scores` (independent sigmoid heads, ``(B, K)``): ``neg_msp = −(1/K)
  Σ_k max(σ(l_k), 1 − σ(l_k))`` (each label's binary softmax) and the joint energy
  ``energy = −Σ_k log(1 + exp(l_k))``.
- :func:`recording_gains` collects the flow's per-modality likelihood gains
  (:meth:`~mango.models.fusion.FlowFusion.likelihood_gains`), which say which modality is the
  broken one: the one that gains most from being re-imputed given the others.

Example:
    >>> scores = softmax_scores(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    >>> [round(v, 3) for v in scores["neg_msp"].tolist()]
    [-0.881, -0.5]
    >>> [round(v, 3) for v in scores["energy"].tolist()]
    [-2.127, -0.693]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.models.fusion import FlowFusion


def _per_sample(values: Tensor) -> Tensor:
    """``(B, ...)`` -> ``(B,)``: the mean over every other dimension."""
    return values.flatten(1).mean(1) if values.dim() > 1 else values


def softmax_scores(logits: Tensor) -> dict[str, Tensor]:
    """``neg_msp`` and ``energy`` ``(B,)`` of a softmax head (see the module doc)."""
    logits = logits.float()
    msp = logits.softmax(dim=1).amax(dim=1)
    energy = -torch.logsumexp(logits, dim=1)
    return {"neg_msp": -_per_sample(msp), "energy": _per_sample(energy)}


def multilabel_scores(logits: Tensor) -> dict[str, Tensor]:
    """``neg_msp`` and ``energy`` ``(B,)`` of independent sigmoid heads (see the module doc)."""
    logits = logits.float()
    probability = logits.sigmoid()
    confidence = torch.maximum(probability, 1 - probability)
    return {
        "neg_msp": -_per_sample(confidence),
        "energy": -_per_sample(F.softplus(logits)) * logits.shape[1],
    }


@contextmanager
def recording_gains(model: nn.Module) -> Iterator[list[list[Tensor]]]:
    """Within the block, every flow of ``model`` records the likelihood gains ``(B, M)`` of the
    tokens it fuses. Yields one list per flow (in ``model.modules()`` order), each call
    appending; nothing is recorded outside the block."""
    fusions = [m for m in model.modules() if isinstance(m, FlowFusion)]
    saved = [f.gains for f in fusions]
    lists: list[list[Tensor]] = [[] for _ in fusions]
    for fusion, gains in zip(fusions, lists, strict=True):
        fusion.gains = gains
    try:
        yield lists
    finally:
        for fusion, old in zip(fusions, saved, strict=True):
            fusion.gains = old
