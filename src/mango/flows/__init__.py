"""Pure invertible math: every layer returns ``(output, logdet)`` and has an exact ``inverse``.

Direction: forward = data -> latent. Tokens are ``(B, L, D)``; ``logdet`` is ``(B,)``.
"""

from mango.flows.actnorm import ActNorm
from mango.flows.attention import ATTENTION_FORMS, InvertibleCrossAttention
from mango.flows.base import FlowLayer, SequentialFlow
from mango.flows.block import AttentionMap, MangoBlock, MangoFlow, NonFiniteFlowError
from mango.flows.coupling import AffineCoupling
from mango.flows.partitions import PARTITIONS, num_variants, partition_indices
from mango.flows.token_mixing import LUTokenMixing

__all__ = [
    "ATTENTION_FORMS",
    "PARTITIONS",
    "ActNorm",
    "AffineCoupling",
    "AttentionMap",
    "FlowLayer",
    "InvertibleCrossAttention",
    "LUTokenMixing",
    "MangoBlock",
    "MangoFlow",
    "NonFiniteFlowError",
    "SequentialFlow",
    "num_variants",
    "partition_indices",
]
