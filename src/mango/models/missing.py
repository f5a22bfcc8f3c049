"""Absent modalities inside the task models: the presence mask, the zero rule, and flow imputation.

A batch may carry ``batch["present"]``: a mapping ``modality -> (B,)`` booleans (a modality not
listed is present for every sample). Models read it with :func:`presence`, apply the **zero
rule** to the inputs of absent samples (:func:`zero_absent`: the normalised input becomes 0, a
text becomes empty) and pass the mask to their fusion. :func:`filling` then says what the absent
modalities' tokens become at every fused stage: ``"zero"`` keeps the zero rule's tokens,
``"mean"`` and ``"regress"`` put the training mean or the imputer's prediction in their place
before any fusion (:mod:`mango.models.fusion.filler`), and ``"impute"`` lets every
:class:`~mango.models.fusion.FlowFusion` replace them by the flow's most likely completion.
Features used outside the fused stages (e.g. the other concatenation stages of a segmentation
model) keep the zero rule.

Example:
    >>> batch = {"present": {"depth": torch.tensor([True, False])}}
    >>> presence(batch, ["rgb", "depth"], 2, torch.device("cpu")).tolist()
    [[True, True], [True, False]]
    >>> zero_absent(torch.ones(2, 1, 2, 2), torch.tensor([True, False])).flatten(1).sum(1).tolist()
    [4.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion import FlowFusion, ImputationRecord, ImputationSettings
from mango.models.fusion.filler import fillers

#: what absent modalities' tokens become (``--fill``)
FILLS = ("zero", "mean", "regress", "impute")


def presence(
    batch: Mapping[str, Any], modalities: Sequence[str], size: int, device: torch.device
) -> Tensor | None:
    """``(B, M)`` booleans for ``modalities`` in order, or ``None`` when every sample has all."""
    given = batch.get("present")
    if not given:
        return None
    columns = [
        torch.as_tensor(given[m], device=device, dtype=torch.bool).reshape(size)
        if m in given
        else torch.ones(size, dtype=torch.bool, device=device)
        for m in modalities
    ]
    mask = torch.stack(columns, dim=1)
    return None if bool(mask.all()) else mask


def zero_absent(x: Tensor, present: Tensor | None) -> Tensor:
    """``x`` with the rows of absent samples (``present[b] = False``) set to zero."""
    if present is None:
        return x
    return x * present.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def noise_control(x: Tensor, replace: bool) -> Tensor:
    """Standard Gaussian noise of ``x``'s shape when ``replace``, else ``x`` (the noise control:
    a branch of the same shape that carries no information, ``model.noise``)."""
    return torch.randn_like(x) if replace else x


def check_noise(noise: Sequence[str], modalities: Sequence[str]) -> tuple[str, ...]:
    """``noise`` as a tuple, after checking that it names modalities the model uses."""
    unknown = [m for m in noise if m not in modalities]
    if unknown:
        raise ConfigError(
            f"model.noise: {unknown[0]!r} is not one of the model's modalities {list(modalities)}"
        )
    return tuple(noise)


def empty_absent(texts: Sequence[str], present: Tensor | None) -> list[str]:
    """Texts with the absent samples' texts replaced by the empty string."""
    if present is None:
        return list(texts)
    return [t if bool(p) else "" for t, p in zip(texts, present.tolist(), strict=True)]


def flow_fusions(model: nn.Module) -> list[FlowFusion]:
    """Every :class:`FlowFusion` of ``model`` (one per fused stage)."""
    return [m for m in model.modules() if isinstance(m, FlowFusion)]


@dataclass
class ImputationSummary:
    """What imputation did during a :func:`filling` block (all fusions, all batches)."""

    records: list[ImputationRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int]:
        """``impute_samples``, ``impute_ms_per_sample``, ``impute_bits_per_dim`` (joint NLL of
        the completed tokens), ``impute_start_bits_per_dim`` (the same for the start) and
        ``impute_conditional_gain_bits`` (how much more likely the completion is than the start
        under ``p(x_m | x_o)``, in bits per completed dimension: exact, ``log p(x_o)`` cancels).
        Empty when nothing was imputed."""
        records = [r for r in self.records if r.samples]
        if not records:
            return {}
        log2 = math.log(2)
        after = torch.cat([r.log_prob / r.dims for r in records])
        before = torch.cat([r.start_log_prob / r.dims for r in records])
        gain = torch.cat([(r.log_prob - r.start_log_prob) / r.missing_dims for r in records])
        per_call = sum(r.seconds for r in records)
        imputed = sum(r.samples for r in records)
        return {
            "impute_samples": imputed,
            "impute_ms_per_sample": 1000.0 * per_call / imputed,
            "impute_bits_per_dim": float(-after.mean() / log2),
            "impute_start_bits_per_dim": float(-before.mean() / log2),
            "impute_conditional_gain_bits": float(gain.mean() / log2),
        }


@contextmanager
def filling(
    model: nn.Module, fill: str, settings: ImputationSettings | None = None
) -> Iterator[ImputationSummary]:
    """Set how ``model`` treats absent modalities' tokens (one of :data:`FILLS`).

    Sets the fill of every filler (``mean``, ``regress``) and every flow (``impute``) of
    ``model``. Yields an :class:`ImputationSummary` that collects every imputation made inside
    the block; the previous fills, settings and records are restored on exit.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    fusions, held = flow_fusions(model), fillers(model)
    saved = [(f.fill, f.imputation, f.records) for f in fusions]
    saved_fills = [f.fill for f in held]
    summary = ImputationSummary()
    for fusion in fusions:
        fusion.fill = fill
        fusion.imputation = settings or fusion.imputation
        fusion.records = summary.records
    for filler in held:
        filler.fill = fill
    try:
        yield summary
    finally:
        for fusion, (old_fill, old_settings, old_records) in zip(fusions, saved, strict=True):
            fusion.fill, fusion.imputation, fusion.records = old_fill, old_settings, old_records
        for filler, old in zip(held, saved_fills, strict=True):
            filler.fill = old


def fill_problem(model: nn.Module, fill: str) -> str | None:
    """Why ``model`` cannot fill absent tokens by ``fill`` (``None``: it can).

    ``impute`` needs a flow; ``mean`` and ``regress`` a fused stage with 2+ modalities;
    ``mean`` the training means (checkpoints of an earlier mango lack them); ``regress`` the
    imputer (``model.imputer: true``).
    """
    if fill == "impute" and not flow_fusions(model):
        return "holds a model without a flow"
    if fill not in ("mean", "regress"):
        return None
    held = [f for f in fillers(model) if len(f.tokens) >= 2]
    if not held:
        return "holds a model without a fused stage of 2+ modalities to fill"
    if fill == "mean" and not all(f.has_mean for f in held):
        return (
            "holds no training mean of the fused tokens (written by an earlier mango, or never "
            "trained); retrain it"
        )
    if fill == "regress" and not all(f.has_imputer for f in held):
        return "holds no imputer; train it with model.imputer: true"
    return None
