"""Every fusion behind one interface (:class:`Fusion`), one file each; :func:`build_fusion` picks one.

| ``model.fusion`` | class | file |
|---|---|---|
| ``mango`` | :class:`FlowFusion` | ``flow.py`` |
| ``concat`` (also ``single``, ``late``) | :class:`IdentityFusion` | ``concat.py`` |
| ``transformer`` | ``TransformerFusion`` | ``transformer.py`` |
| ``cross_attention`` | ``CrossAttentionFusion`` | ``cross_attention.py`` |
| ``tokenfusion`` | ``TokenFusion`` | ``tokenfusion.py`` |
| ``geminifusion`` | ``GeminiFusion`` | ``geminifusion.py`` |
| ``cmx`` | ``CMXFusion`` | ``cmx.py`` |
"""

from mango.models.fusion.base import Fusion, FusionOutput, TokenInput
from mango.models.fusion.build import (
    ALIGNED_FUSIONS,
    BASELINE_FUSIONS,
    TOKEN_FUSIONS,
    build_fusion,
    fusion_class,
)
from mango.models.fusion.concat import IdentityFusion
from mango.models.fusion.embedding import TokenEmbedding
from mango.models.fusion.flow import FlowFusion, ImputationRecord, ImputationSettings

__all__ = [
    "ALIGNED_FUSIONS",
    "BASELINE_FUSIONS",
    "TOKEN_FUSIONS",
    "FlowFusion",
    "Fusion",
    "FusionOutput",
    "IdentityFusion",
    "ImputationRecord",
    "ImputationSettings",
    "TokenEmbedding",
    "TokenInput",
    "build_fusion",
    "fusion_class",
]
