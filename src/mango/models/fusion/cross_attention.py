"""Bidirectional cross-attention (``model.fusion: cross_attention``): co-attention between streams.

The two-stream baseline of ``docs/baselines.md`` ("specification for the library": pre-norm,
synchronous): each modality keeps its own stream and, in every layer, attends to the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion, FusionOutput
from mango.models.fusion.transformer import attention_hidden


class CrossAttentionBlock(nn.Module):
    """One modality's half of a co-attention layer: cross-attention, then FFN, both pre-norm.

    ``norm1`` is applied by the caller (the other modalities' keys and values need it too), so
    :meth:`forward` receives the normed query and the normed context alongside the raw stream.
    """

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, stream: Tensor, query: Tensor, context: Tensor) -> Tensor:
        """``stream + MHA(query, context, context)``, then ``+ FFN(LN2(·))``; all ``(B, ·, D)``."""
        attended, _ = self.attention(query, context, context, need_weights=False)
        stream = stream + self.dropout1(attended)
        return stream + self.ffn(self.norm2(stream))


class CrossAttentionFusion(Fusion):
    r"""Bidirectional cross-attention: every modality's stream attends to the others', in step.

    With :math:`x_m \in \mathbb{R}^{B \times L_m \times D}` the inputs of a layer, each layer
    computes, for every modality :math:`m` with its own weights (nothing shared between
    directions or layers):

    .. math::
        \tilde x_m &= \mathrm{LN}_{1,m}(x_m) \\
        x'_m &= x_m + \mathrm{MHA}_m(Q = \tilde x_m,\ K = V = [\tilde x_n]_{n \ne m}) \\
        x''_m &= x'_m + \mathrm{FFN}_m(\mathrm{LN}_{2,m}(x'_m)),
            \quad \mathrm{FFN}_m = \mathrm{Linear}(D, H) \to \mathrm{GELU} \to \mathrm{Linear}(H, D)

    and the outputs after the last layer are :math:`y_m = \mathrm{LN}_{f,m}(x''_m)`. The update
    is **synchronous**: every :math:`\tilde x_n` comes from the layer's inputs, so no modality
    attends to another's already-updated tokens. There is no self-attention inside a layer
    (as in ViLBERT's Co-TRM). :math:`H = \mathrm{round}(r D)` with ``r = ffn_ratio``; MHA has
    ``heads`` heads of width ``D / heads``. For two modalities one layer holds
    :math:`2 [(4 + 2r) D^2 + (9 + r) D]` parameters, the fusion ``layers`` times that plus
    :math:`2 D M` (the final LayerNorms).

    Generalisation beyond two streams: for ``M > 2`` modalities the keys and values
    of modality :math:`m` are the concatenation, along the sequence, of every other modality's
    normed tokens :math:`[\tilde x_n]_{n \ne m}` (so the parameters grow as ``M`` per layer, not
    ``M (M - 1)``). Token counts may differ between modalities.

    What is adapted from ViLBERT and BridgeTower is described in ``docs/baselines.md`` ("What
    is adapted, and why"). ``present`` is accepted and ignored: absent modalities arrive
    zero-filled and are attended to like any other tokens.

    Args:
        dim: token width ``D`` (divisible by ``heads``).
        tokens: token counts ``L_m`` of the modalities (at least 2; may differ).
        layers: co-attention layers (at least 1).
        heads: attention heads of every direction.
        ffn_ratio: FFN width ``H = round(ffn_ratio · dim)`` (default 4.0).
        dropout: dropout on the attention and FFN outputs (default 0.0: none).

    Example:
        >>> import torch
        >>> fusion = CrossAttentionFusion(dim=8, tokens=[3, 2], layers=1, heads=2)
        >>> out = fusion([torch.randn(2, 3, 8), torch.randn(2, 2, 8)])
        >>> [tuple(t.shape) for t in out.tokens], out.bits_per_dim, out.aux_loss
        ([(2, 3, 8), (2, 2, 8)], None, None)
        >>> fusion.parameter_count() == 2 * ((4 + 2 * 4) * 8**2 + (9 + 4) * 8) + 2 * 2 * 8
        True

    References:
        | ViLBERT: Pretraining Task-Agnostic Visiolinguistic Representations for
        | Vision-and-Language Tasks (Lu et al., NeurIPS 2019)
        | https://arxiv.org/abs/1908.02265
        | BridgeTower: Building Bridges Between Encoders in Vision-Language Representation
        | Learning (Xu et al., AAAI 2023)
        | https://arxiv.org/abs/2206.08657
    """

    name = "cross_attention"
    aligned = False

    def __init__(
        self,
        dim: int,
        tokens: Sequence[int],
        layers: int,
        heads: int,
        ffn_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, tokens)
        if len(self.tokens) < 2:
            raise ConfigError(
                f"model.fusion: cross_attention needs at least 2 modalities to attend across, "
                f"got {len(self.tokens)}"
            )
        hidden = attention_hidden(dim, layers, heads, ffn_ratio)
        self.heads = heads
        modalities = len(self.tokens)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                CrossAttentionBlock(dim, heads, hidden, dropout) for _ in range(modalities)
            )
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(modalities))

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        streams = list(tokens)
        for layer in self.layers:
            normed = [block.norm1(x) for block, x in zip(layer, streams, strict=True)]
            streams = [
                block(x, normed[m], torch.cat(normed[:m] + normed[m + 1 :], dim=1))
                for m, (block, x) in enumerate(zip(layer, streams, strict=True))
            ]
        return FusionOutput([norm(x) for norm, x in zip(self.norms, streams, strict=True)])
