"""``build_fusion``: the one place that turns ``model.fusion`` and the config into a fusion module.

Layered baselines (``transformer``, ``cross_attention``, ``tokenfusion``, ``geminifusion``) get
their depth from :func:`~mango.models.fusion.budget.match_budget` against the MANGO flow of the
same ``dim``, token counts and ``flow`` settings, unless ``fusion.layers`` is set. ``cmx`` has a
fixed depth (one rectification and one fusion module). Heads default to ``max(1, dim // 64)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion
from mango.models.fusion.budget import match_budget

#: model.fusion -> "module:class" of every fusion that works on tokens
TOKEN_FUSIONS: dict[str, str] = {
    "mango": "flow:FlowFusion",
    "concat": "concat:IdentityFusion",
    "transformer": "transformer:TransformerFusion",
    "cross_attention": "cross_attention:CrossAttentionFusion",
    "tokenfusion": "tokenfusion:TokenFusion",
    "geminifusion": "geminifusion:GeminiFusion",
    "cmx": "cmx:CMXFusion",
}
#: the attention-based baselines the paper's thesis is tested against
BASELINE_FUSIONS = ("transformer", "cross_attention", "tokenfusion", "geminifusion", "cmx")
#: fusions that need position-aligned modalities (equal token counts)
ALIGNED_FUSIONS = ("tokenfusion", "geminifusion", "cmx")
#: fusions whose depth is matched to the flow's parameter count
LAYERED = ("transformer", "cross_attention", "tokenfusion", "geminifusion")


def fusion_class(name: str) -> type[Fusion]:
    """The class behind ``model.fusion = name``."""
    if name not in TOKEN_FUSIONS:
        raise ConfigError(f"model.fusion: expected one of {', '.join(TOKEN_FUSIONS)}, got {name!r}")
    module, cls = TOKEN_FUSIONS[name].split(":")
    return getattr(import_module(f"mango.models.fusion.{module}"), cls)


def _heads(settings: Mapping[str, Any], dim: int) -> int:
    return settings.get("heads") or max(1, dim // 64)


def _layered(
    name: str,
    dim: int,
    tokens: Sequence[int],
    grid: tuple[int, int] | None,
    settings: Mapping[str, Any],
) -> Callable[[int, float], Fusion]:
    """``(layers, ffn_ratio) -> module`` for a layered baseline with the other settings fixed."""
    cls = fusion_class(name)
    common: dict[str, Any] = {
        "heads": _heads(settings, dim),
        "dropout": settings.get("dropout", 0.0),
    }
    if name == "tokenfusion":
        common |= {
            "threshold": settings.get("threshold", 0.02),
            "sparsity_weight": settings.get("sparsity_weight", 1e-4),
            "mix_ffn": settings.get("mix_ffn", True),
            "grid": grid,
        }
    elif name == "geminifusion":
        common |= {
            "fusion_heads": settings.get("fusion_heads", 8),
            "mix_ffn": settings.get("mix_ffn", True),
            "grid": grid,
        }

    def factory(layers: int, ffn_ratio: float) -> Fusion:
        return cls(dim, tokens, layers=layers, ffn_ratio=ffn_ratio, **common)

    return factory


def build_fusion(
    name: str,
    dim: int,
    tokens: Sequence[int],
    grid: tuple[int, int] | None = None,
    flow: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Fusion:
    """The fusion ``name`` for modalities of ``tokens`` tokens of width ``dim``.

    Args:
        name: a key of :data:`TOKEN_FUSIONS`.
        grid: ``(h, w)`` when the tokens are a row-major map (used by convolutions inside
            ``tokenfusion``/``geminifusion``'s Mix-FFN and ``cmx``).
        flow: the ``flow`` config section (``FlowFusion``'s options; also the budget's target).
        settings: the ``fusion`` config section (:class:`mango.config.FusionSettings` fields).

    Example:
        >>> fusion = build_fusion("transformer", 16, [4, 4], flow={"blocks": 1,
        ...                       "coupling_hidden": 16})
        >>> target = build_fusion("mango", 16, [4, 4], flow={"blocks": 1, "coupling_hidden": 16})
        >>> abs(fusion.parameter_count() / target.parameter_count() - 1) <= 0.1
        True
    """
    flow = dict(flow or {})
    settings = dict(settings or {})
    cls = fusion_class(name)
    if name == "mango":
        return cls(dim, tokens, **flow)
    if name == "concat":
        return cls(dim, tokens)
    if name == "cmx":
        return cls(
            dim,
            tokens,
            heads=_heads(settings, dim),
            reduction=settings.get("reduction", 1),
            lambda_c=settings.get("lambda_c", 0.5),
            lambda_s=settings.get("lambda_s", 0.5),
            grid=grid,
        )
    if cls.aligned and len(set(tokens)) > 1:  # before any budget probe builds the module
        raise ConfigError(
            f"model.fusion: {name} needs position-aligned modalities with equal token counts, "
            f"got {list(tokens)}"
        )
    factory = _layered(name, dim, tokens, grid, settings)
    ratio = settings.get("ffn_ratio")
    if settings.get("layers"):
        return factory(settings["layers"], ratio or 4.0)
    target = fusion_class("mango")(dim, tokens, **flow).parameter_count()
    budget = match_budget(factory, dim, target, name, ffn_ratio=ratio)
    module = factory(budget.layers, budget.ffn_ratio)
    module.budget = budget
    return module
