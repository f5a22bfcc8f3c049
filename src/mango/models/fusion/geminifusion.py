"""GeminiFusion (``model.fusion: geminifusion``): pixel-wise cross-attention inside every layer.

Written from the released MiT code's semantics (``docs/baselines.md``), adapted to one fusion
stage; see :class:`GeminiFusion` and :class:`PixelwiseCrossAttention`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion, FusionOutput
from mango.models.fusion.two_stream import TwoStreamLayer, check_two_streams, init_mit_weights


class PixelwiseCrossAttention(nn.Module):
    """GeminiFusion's pixel-wise fusion of one layer, for both directions.

    For direction ``m`` (query stream ``m``, other stream ``m̄``) and every position ``i``
    separately, attention of ``W_Q s_m[i]`` over exactly two slots::

        ρ[i]   = softmax_over_channels(W₂ · GELU(W₁ · [s_m[i]; s_m̄[i]] + c₁) + c₂)
        slot 1 ("self"):  key W_K(s_m[i] + n_K[m]),  value W_V(s_m[i] + n_V[m])
        slot 2 ("cross"): key W_K(s_m[i] ⊙ ρ[i]),    value W_V s_m̄[i]
        out[i] = W_O concat_heads(w₁ v¹ + w₂ v²),   w = softmax over the 2 slots of q·k / √d

    The cross key is the stream's own token re-weighted by the relation ``ρ``; only the cross
    value comes from the other stream. The relation MLP (``2D → D → D``) is shared by both
    directions (own token first); ``W_Q, W_K, W_V, W_O`` (with biases) are a direction's own
    :class:`~torch.nn.MultiheadAttention`; the noises ``n_K``, ``n_V`` are learned vectors
    (``nn.Embedding(2, D)``, row ``m`` for direction ``m``, initialised N(0, 1)). Upstream runs
    ``nn.MultiheadAttention`` with the positions as its batch; here the same computation is
    written out over all ``B · L`` positions at once (O(B L D) memory).

    Parameters: ``11 D² + 14 D``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relation = nn.Sequential(
            nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.Softmax(dim=-1)
        )
        self.attention = nn.ModuleList(nn.MultiheadAttention(dim, heads) for _ in range(2))
        self.key_noise = nn.Embedding(2, dim)
        self.value_noise = nn.Embedding(2, dim)

    def forward(self, own: Tensor, other: Tensor, direction: int) -> Tensor:
        """The fusion update ``(B, L, D)`` of stream ``direction`` (without the inner residual)."""
        attention = self.attention[direction]
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
        relation = self.relation(torch.cat([own, other], dim=-1))
        shape = (*own.shape[:-1], self.heads, -1)
        query = F.linear(own, w_q, b_q).reshape(shape)
        keys = (
            F.linear(own + self.key_noise.weight[direction], w_k, b_k).reshape(shape),
            F.linear(own * relation, w_k, b_k).reshape(shape),
        )
        values = (
            F.linear(own + self.value_noise.weight[direction], w_v, b_v).reshape(shape),
            F.linear(other, w_v, b_v).reshape(shape),
        )
        logits = torch.stack([(query * k).sum(-1) for k in keys], dim=-1)
        weights = (logits / math.sqrt(query.shape[-1])).softmax(dim=-1).unsqueeze(-1)
        mixed = weights[..., 0, :] * values[0] + weights[..., 1, :] * values[1]
        return attention.out_proj(mixed.flatten(-2))


class GeminiFusion(Fusion):
    """GeminiFusion: a pixel-wise cross-attention between the streams in every attention layer.

    Two streams ``x_a``, ``x_b`` ``(B, L, D)`` (position-aligned) go through ``layers`` pre-norm
    transformer layers whose weights are shared between the streams, with LayerNorms per stream
    (:class:`~mango.models.fusion.two_stream.TwoStreamLayer`). Per layer, for stream ``m``::

        s_m = MHSA(LN1_m(x_m))                 merged heads, BEFORE the shared projection
        f_m = s_m + PWCA_m(s_m, s_m̄)           pixel-wise fusion with its own residual
        x_m ← x_m + W_o f_m + b_o
        x_m ← x_m + FFN(LN2_m(x_m))

    and a final per-stream LayerNorm; ``PWCA`` is :class:`PixelwiseCrossAttention` (each position
    attends over two slots only: its own token plus a learned noise, and the other stream's token
    at the same position behind a relation-weighted key). There is no score, no exchange and no
    extra loss.

    What is adapted from the released MiT code to one MANGO fusion stage is described in
    ``docs/baselines.md`` ("What is adapted, and why").

    Parameters (shared weights once; ``r`` = ``ffn_ratio``): ``layers · [(4 + 2r) D² + (13 + r) D
    + 11 D² + 14 D + 10 r D · mix] + 4 D``.

    Args:
        dim: token width ``D`` (divisible by ``heads`` and by ``fusion_heads``).
        tokens: token counts of the two modalities (equal).
        layers: transformer layers of the stage (at least 1).
        heads: self-attention heads.
        ffn_ratio: FFN width ``round(ffn_ratio · dim)`` (default 4.0).
        fusion_heads: heads of the pixel-wise cross-attention (default 8, as upstream).
        mix_ffn: 3x3 depth-wise conv in the FFN (default ``True``; needs ``grid``).
        grid: ``(h, w)`` with ``h · w = L``, the tokens' row-major grid (default ``None``: no
            conv, a plain MLP).
        dropout: dropout on the attention-branch and FFN outputs (default 0.0: none).

    Example:
        >>> import torch
        >>> fusion = GeminiFusion(8, [6, 6], layers=2, heads=2, fusion_heads=2, grid=(2, 3))
        >>> out = fusion({"rgb": torch.randn(3, 6, 8), "depth": torch.randn(3, 6, 8)})
        >>> [tuple(t.shape) for t in out.tokens], out.names, out.aux_loss
        ([(3, 6, 8), (3, 6, 8)], ('rgb', 'depth'), None)

    References:
        | GeminiFusion: Efficient Pixel-wise Multimodal Fusion for Vision Transformer
        | (Jia et al., ICML 2024)
        | https://arxiv.org/abs/2406.01210
        | https://github.com/JiaDingCN/GeminiFusion
    """

    name = "geminifusion"
    aligned = True

    def __init__(
        self,
        dim: int,
        tokens: Sequence[int],
        layers: int,
        heads: int,
        ffn_ratio: float = 4.0,
        fusion_heads: int = 8,
        mix_ffn: bool = True,
        grid: tuple[int, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, tokens)
        check_two_streams(self.name, dim, self.tokens, layers, heads, grid)
        if fusion_heads < 1 or dim % fusion_heads:
            raise ConfigError(
                f"fusion.fusion_heads: {fusion_heads} heads do not divide model.dim {dim}"
            )
        hidden = round(ffn_ratio * dim)
        self.layers = nn.ModuleList(
            TwoStreamLayer(dim, heads, hidden, grid if mix_ffn else None, dropout)
            for _ in range(layers)
        )
        self.fusions = nn.ModuleList(
            PixelwiseCrossAttention(dim, fusion_heads) for _ in range(layers)
        )
        self.norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(2))
        # MiT's init hook: Linears (the relation MLP, the attentions' out_proj) trunc-normal;
        # in_proj keeps MultiheadAttention's xavier-uniform, the noises their N(0, 1).
        self.apply(init_mit_weights)

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        x = list(tokens)
        for layer, fusion in zip(self.layers, self.fusions, strict=True):
            s = [layer.attend(x[m], m) for m in range(2)]
            f = [s[m] + fusion(s[m], s[1 - m], m) for m in range(2)]
            x = [layer.feed_forward(x[m] + layer.project(f[m]), m) for m in range(2)]
        return FusionOutput([self.norm[m](x[m]) for m in range(2)])
