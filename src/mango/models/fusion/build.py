"""``build_fusion``: the one place that turns ``model.fusion`` and the config into a fusion module.

Layered baselines (``transformer``, ``cross_attention``, ``tokenfusion``, ``geminifusion``) get
their depth from :func:`~mango.models.fusion.budget.match_budget` against the MANGO flow of the
same ``dim``, token counts and ``flow`` settings, unless ``fusion.layers`` is set. ``cmx`` has a
fixed depth (one rectification and one fusion module). Heads default to ``max(1, dim // 64)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def fusion_class(name: str) -> type[Fusion]:
    """The class behind ``model.fusion = name``."""
    if name not in TOKEN_FUSIONS:
        raise ConfigError(f"model.fusion: expected one of {', '.join(TOKEN_FUSIONS)}, got {name!r}")
    module, cls = TOKEN_FUSIONS[name].split(":")
    return getattr(import_module(f"mango.models.fusion.{module}"), cls)


#: the ``fusion`` settings each baseline takes (beside ``heads``); unset ones keep the class default
OPTIONS: dict[str, tuple[str, ...]] = {
    "transformer": ("dropout",),
    "cross_attention": ("dropout",),
    "tokenfusion": ("dropout", "threshold", "sparsity_weight", "mix_ffn"),
    "geminifusion": ("dropout", "fusion_heads", "mix_ffn"),
    "cmx": ("reduction", "lambda_c", "lambda_s"),
}


def _options(
    name: str, dim: int, grid: tuple[int, int] | None, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of baseline ``name``: its given settings, the heads, and the grid."""
    given = {key: settings[key] for key in OPTIONS[name] if settings.get(key) is not None}
    grid_option = {"grid": grid} if name in ALIGNED_FUSIONS else {}  # position-wise on a grid
    return {"heads": settings.get("heads") or max(1, dim // 64), **given, **grid_option}


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
    options = _options(name, dim, grid, settings)
    if name == "cmx":  # one rectification and one fusion module: nothing to size
        return cls(dim, tokens, **options)

    def factory(layers: int, ffn_ratio: float) -> Fusion:
        return cls(dim, tokens, layers=layers, ffn_ratio=ffn_ratio, **options)

    ratio = settings.get("ffn_ratio")
    if settings.get("layers"):
        return factory(settings["layers"], ratio or 4.0)
    target = fusion_class("mango")(dim, tokens, **flow).parameter_count()
    budget = match_budget(factory, dim, target, name, ffn_ratio=ratio)
    module = factory(budget.layers, budget.ffn_ratio)
    module.budget = budget
    return module
