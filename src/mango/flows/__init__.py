"""Pure invertible math: every layer returns ``(output, logdet)`` and has an exact ``inverse``.

Direction: forward = data -> latent. Tokens are ``(B, L, D)``; ``logdet`` is ``(B,)``.
"""

from mango.flows.actnorm import ActNorm
from mango.flows.base import FlowLayer, SequentialFlow
from mango.flows.block import AttentionMap, MangoBlock, MangoFlow, NonFiniteFlowError
from mango.flows.coupling import CONDITIONERS, AffineCoupling, AttentionConditioner
from mango.flows.cross_attention import ATTENTION_FORMS, InvertibleCrossAttention
from mango.flows.folded import FoldedNormAttention
from mango.flows.health import HealthTerms, attention_disabled, health_terms
from mango.flows.partitions import PARTITIONS, num_variants, partition_indices
from mango.flows.signed_attention import SignedCrossAttention
from mango.flows.softmax_attention import SoftmaxCrossAttention
from mango.flows.token_mixing import LUTokenMixing

__all__ = [
    "ATTENTION_FORMS",
    "CONDITIONERS",
    "PARTITIONS",
    "ActNorm",
    "AffineCoupling",
    "AttentionConditioner",
    "AttentionMap",
    "FlowLayer",
    "FoldedNormAttention",
    "HealthTerms",
    "InvertibleCrossAttention",
    "LUTokenMixing",
    "MangoBlock",
    "MangoFlow",
    "NonFiniteFlowError",
    "SequentialFlow",
    "SignedCrossAttention",
    "SoftmaxCrossAttention",
    "attention_disabled",
    "health_terms",
    "num_variants",
    "partition_indices",
]
