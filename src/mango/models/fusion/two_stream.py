"""The two-stream transformer layer that TokenFusion and GeminiFusion build on.

Both methods run one MiT (SegFormer) encoder over two modalities with every weight shared
between the streams except the LayerNorms (``ModuleParallel`` / ``LayerNormParallel`` upstream;
TokenFusion supplementary Table 8: shared attention and MLP with per-modality LayerNorms is best).
:class:`TwoStreamLayer` is one such pre-norm layer, split into the steps the two methods put their
fusion between::

    s_m = MHSA(LN1_m(x_m))          merged heads, before the output projection
    u_m = W_o s_m + b_o             the attention update
    x_m ← x_m + FFN(LN2_m(x_m))     after the fusion has added its update to x_m

with ``q``, ``kv``, ``proj`` and the FFN shared and ``LN1_m``, ``LN2_m`` owned by stream ``m``.

Adaptations to a single fusion stage (MANGO fuses the tokens of one stage, not a pyramid):

- **No spatial reduction** (``sr_ratio = 1``): attention is plain multi-head self-attention within
  each stream, as in MiT's last stage. Spatial reduction exists upstream only to make the
  high-resolution early stages affordable.
- **No drop-path**: a single stage of a few layers; ``dropout`` (MiT's ``drop_rate``) acts on the
  attention-branch and FFN outputs. Attention-probability dropout is 0 upstream and not offered.
- **Mix-FFN** (``fc1 → 3x3 depth-wise conv on the (h, w) grid → GELU → fc2``) needs the grid of the
  tokens; without a grid (tokens that are not a feature map) the conv is not built and the FFN is
  the plain MLP ``fc1 → GELU → fc2``.

Initialisation follows MiT: Linear weights truncated-normal (std 0.02) with zero biases,
LayerNorms at identity (``eps = 1e-6``), convolutions normal with std ``sqrt(2 / fan_out)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import ConfigError


def init_mit_weights(module: nn.Module) -> None:
    """MiT's initialisation of one module (use with ``Module.apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_two_streams(
    name: str,
    dim: int,
    tokens: Sequence[int],
    layers: int,
    heads: int,
    grid: tuple[int, int] | None,
) -> None:
    """The checks both two-stream fusions share; a :class:`ConfigError` names the field at fault."""
    if len(tokens) != 2:
        raise ConfigError(f"model.fusion: {name} fuses exactly 2 modalities, got {len(tokens)}")
    if layers < 1:
        raise ConfigError(f"fusion.layers: {name} needs at least 1 layer, got {layers}")
    if heads < 1 or dim % heads:
        raise ConfigError(f"fusion.heads: {heads} heads do not divide model.dim {dim}")
    if grid is not None and (len(grid) != 2 or grid[0] * grid[1] != tokens[0]):
        raise ConfigError(
            f"model.fusion: {name} got the grid {tuple(grid)} for {tokens[0]} tokens "
            f"(h · w must equal the token count)"
        )


class MixFFN(nn.Module):
    """``fc2(GELU(DWConv3x3(fc1(x))))`` on an ``(h, w)`` grid, or ``fc2(GELU(fc1(x)))`` without one.

    Tokens are the row-major flattening of the grid (as ``Tensor.flatten(2)`` of a feature map).
    The depth-wise conv has ``9 · hidden + hidden`` parameters.
    """

    def __init__(
        self, dim: int, hidden: int, grid: tuple[int, int] | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self.fc1 = nn.Linear(dim, hidden)
        self.conv = None if grid is None else nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        if self.conv is not None and self.grid is not None:
            batch, _, channels = hidden.shape
            grid = hidden.transpose(1, 2).reshape(batch, channels, *self.grid)
            hidden = self.conv(grid).flatten(2).transpose(1, 2)
        return self.dropout(self.fc2(self.dropout(F.gelu(hidden))))


class TwoStreamLayer(nn.Module):
    """One pre-norm transformer layer run on two streams: shared weights, per-stream LayerNorms.

    For stream ``m`` (``LN1_m``, ``LN2_m`` its own, everything else shared)::

        x_m ← x_m + W_o MHSA(LN1_m(x_m)) + b_o
        x_m ← x_m + FFN(LN2_m(x_m))

    The layer is used in steps, so that a fusion can act between them:
    :meth:`attend` (the merged-head attention output before the projection), :meth:`project`
    (the shared output projection) and :meth:`feed_forward` (the FFN sub-layer with its residual).
    A plain layer is ``x + project(attend(x, m))`` followed by ``feed_forward(·, m)``.

    Parameters: ``(4 + 2r) D² + (13 + r) D`` with ``r · D`` the FFN width (q, kv, proj, fc1 and
    fc2 with biases, and two LayerNorms per stream), plus ``10 r D`` for the Mix-FFN's conv.

    Args:
        dim: token width ``D``.
        heads: attention heads (divide ``dim``).
        hidden: FFN width.
        grid: ``(h, w)`` of the tokens, for the Mix-FFN's depth-wise conv (default ``None``:
            plain MLP).
        dropout: dropout on the attention-branch and FFN outputs (default 0.0: none).

    Example:
        >>> import torch
        >>> layer = TwoStreamLayer(dim=8, heads=2, hidden=16, grid=(2, 3))
        >>> x = torch.randn(4, 6, 8)
        >>> y = layer.feed_forward(x + layer.project(layer.attend(x, 0)), 0)
        >>> tuple(y.shape)
        (4, 6, 8)
        >>> sum(p.numel() for p in layer.parameters())  # (4 + 2r) D² + (13 + r) D + 10 r D, r = 2
        792

    References:
        | SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers
        | (Xie et al., NeurIPS 2021)
        | https://arxiv.org/abs/2105.15203
        | Multimodal Token Fusion for Vision Transformers (Wang et al., CVPR 2022)
        | https://github.com/yikaiw/TokenFusion
        | https://github.com/JiaDingCN/GeminiFusion
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        hidden: int,
        grid: tuple[int, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for _ in range(2)])
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for _ in range(2)])
        self.ffn = MixFFN(dim, hidden, grid, dropout)
        self.dropout = nn.Dropout(dropout)
        self.apply(init_mit_weights)

    def attend(self, x: Tensor, stream: int) -> Tensor:
        """Multi-head self-attention of ``LN1_stream(x)``, heads merged, before ``proj``."""
        batch, length, dim = x.shape
        normed = self.norm1[stream](x)
        q = self.q(normed).reshape(batch, length, self.heads, -1).transpose(1, 2)
        k, v = self.kv(normed).reshape(batch, length, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(batch, length, dim)

    def project(self, s: Tensor) -> Tensor:
        """The shared output projection ``W_o s + b_o`` (with dropout): the attention update."""
        return self.dropout(self.proj(s))

    def feed_forward(self, x: Tensor, stream: int) -> Tensor:
        """``x + FFN(LN2_stream(x))``."""
        return x + self.ffn(self.norm2[stream](x))
