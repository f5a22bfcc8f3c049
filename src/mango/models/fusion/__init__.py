"""Every fusion behind one interface (:class:`Fusion`), one file each; :func:`build_fusion` picks one.

| ``model.fusion`` | class | file |
|---|---|---|
| ``mango`` | :class:`FlowFusion` | ``flow.py`` |
| ``concat`` (also ``single``, ``late``) | :class:`IdentityFusion` | ``concat.py`` |
| ``transformer`` | :class:`TransformerFusion` | ``transformer.py`` |
| ``cross_attention`` | :class:`CrossAttentionFusion` | ``cross_attention.py`` |
| ``tokenfusion`` | :class:`TokenFusion` | ``tokenfusion.py`` (with ``two_stream.py``) |
| ``geminifusion`` | :class:`GeminiFusion` | ``geminifusion.py`` (with ``two_stream.py``) |
| ``cmx`` | :class:`CMXFusion` | ``cmx.py`` |

The layered baselines are sized to the flow by ``budget.py``; ``docs/baselines.md`` has each
one's equations, defaults and adaptations.
"""

from mango.models.fusion.base import Fusion, FusionOutput, TokenInput
from mango.models.fusion.build import (
    ALIGNED_FUSIONS,
    BASELINE_FUSIONS,
    TOKEN_FUSIONS,
    build_fusion,
    fusion_class,
)
from mango.models.fusion.cmx import CMXFusion
from mango.models.fusion.concat import IdentityFusion
from mango.models.fusion.cross_attention import CrossAttentionFusion
from mango.models.fusion.embedding import TokenEmbedding
from mango.models.fusion.flow import FlowFusion, ImputationRecord, ImputationSettings
from mango.models.fusion.geminifusion import GeminiFusion
from mango.models.fusion.tokenfusion import TokenFusion
from mango.models.fusion.transformer import TransformerFusion

__all__ = [
    "ALIGNED_FUSIONS",
    "BASELINE_FUSIONS",
    "TOKEN_FUSIONS",
    "CMXFusion",
    "CrossAttentionFusion",
    "FlowFusion",
    "Fusion",
    "FusionOutput",
    "IdentityFusion",
    "ImputationRecord",
    "ImputationSettings",
    "GeminiFusion",
    "TokenEmbedding",
    "TokenFusion",
    "TokenInput",
    "TransformerFusion",
    "build_fusion",
    "fusion_class",
]
