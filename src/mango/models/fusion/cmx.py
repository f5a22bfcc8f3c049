"""CMX (``model.fusion: cmx``): feature rectification and feature fusion at one stage.

One stage of CMX's two-stream encoder: the Cross-Modal Feature Rectify Module (FRM) followed by
the Feature Fusion Module (FFM), on two position-aligned modalities. See :class:`CMXFusion`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion, FusionOutput
from mango.models.fusion.two_stream import init_mit_weights


class FeatureRectify(nn.Module):
    """CMX's FRM: each map rectified by the other's channel- and spatial-weighted features.

    ``forward(a, b)`` takes two ``(B, C, h, w)`` maps and returns ``(A', B')`` (see
    :class:`CMXFusion` for the equations).
    """

    def __init__(self, dim: int, reduction: int, lambda_c: float, lambda_s: float) -> None:
        super().__init__()
        hidden = dim // reduction
        self.lambda_c = float(lambda_c)
        self.lambda_s = float(lambda_s)
        self.channel_mlp = nn.Sequential(
            nn.Linear(4 * dim, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, 2 * dim)
        )
        self.spatial_mlp = nn.Sequential(
            nn.Conv2d(2 * dim, hidden, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2, kernel_size=1),
        )

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        both = torch.cat([a, b], dim=1)  # (B, 2C, h, w)
        pooled = torch.cat([both.mean(dim=(2, 3)), both.amax(dim=(2, 3))], dim=1)  # (B, 4C)
        channel = torch.sigmoid(self.channel_mlp(pooled))[:, :, None, None]  # (B, 2C, 1, 1)
        channel_a, channel_b = channel.chunk(2, dim=1)
        spatial_a, spatial_b = torch.sigmoid(self.spatial_mlp(both)).chunk(2, dim=1)  # (B,1,h,w)
        rectified_a = a + self.lambda_c * channel_b * b + self.lambda_s * spatial_b * b
        rectified_b = b + self.lambda_c * channel_a * a + self.lambda_s * spatial_a * a
        return rectified_a, rectified_b


class CrossExchange(nn.Module):
    """Stage 1 of CMX's FFM: each token stream reads the other's global channel context.

    ``forward(x_a, x_b)`` takes two ``(B, N, C)`` token tensors and returns ``(X'_a, X'_b)``;
    :meth:`context` is the per-head context ``G_m`` (see :class:`CMXFusion`).
    """

    def __init__(self, dim: int, reduction: int, heads: int) -> None:
        super().__init__()
        hidden = dim // reduction
        self.heads = heads
        self.scale = (hidden // heads) ** -0.5
        self.split_proj = nn.ModuleList(nn.Linear(dim, 2 * hidden) for _ in range(2))
        self.key_value = nn.ModuleList(nn.Linear(hidden, 2 * hidden, bias=False) for _ in range(2))
        self.end_proj = nn.ModuleList(nn.Linear(2 * hidden, dim) for _ in range(2))
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))

    def context(self, stream: int, interactive: Tensor) -> Tensor:
        """``G_m = softmax_{dim -2}(K_mᵀ V_m / √d)`` ``(B, H, d, d)`` from ``U_m`` ``(B, N, C/r)``.

        ``stream`` 0 or 1 picks ``W^{kv}_m``.
        """
        batch, length, _ = interactive.shape
        key_value = self.key_value[stream](interactive).view(batch, length, 2, self.heads, -1)
        key, value = key_value.permute(2, 0, 3, 1, 4)  # each (B, H, N, d)
        return torch.softmax(key.transpose(-2, -1) @ value * self.scale, dim=-2)

    def _read(self, queries: Tensor, context: Tensor) -> Tensor:
        """``U @ G`` per head: ``(B, N, C/r)`` queries, ``(B, H, d, d)`` context."""
        batch, length, hidden = queries.shape
        per_head = queries.view(batch, length, self.heads, -1).transpose(1, 2)  # (B, H, N, d)
        return (per_head @ context).transpose(1, 2).reshape(batch, length, hidden)

    def forward(self, x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
        residual_a, interactive_a = torch.relu(self.split_proj[0](x_a)).chunk(2, dim=-1)
        residual_b, interactive_b = torch.relu(self.split_proj[1](x_b)).chunk(2, dim=-1)
        read_a = self._read(interactive_a, self.context(1, interactive_b))
        read_b = self._read(interactive_b, self.context(0, interactive_a))
        out_a = self.norm[0](x_a + self.end_proj[0](torch.cat([residual_a, read_a], dim=-1)))
        out_b = self.norm[1](x_b + self.end_proj[1](torch.cat([residual_b, read_b], dim=-1)))
        return out_a, out_b


class ChannelEmbed(nn.Module):
    """Stage 2 of CMX's FFM: the ``(B, 2C, h, w)`` merged map to the fused ``(B, C, h, w)`` map."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        hidden = dim // reduction
        self.residual = nn.Conv2d(2 * dim, dim, kernel_size=1, bias=False)
        self.embed = nn.Sequential(
            nn.Conv2d(2 * dim, hidden, kernel_size=1),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, dim, kernel_size=1),
            nn.BatchNorm2d(dim),
        )
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, merged: Tensor) -> Tensor:
        return self.norm(self.residual(merged) + self.embed(merged))


class CMXFusion(Fusion):
    """CMX at one fusion stage: FRM (feature rectification), then FFM (feature fusion).

    The two modalities' tokens ``(B, L, C)`` are laid out row-major on the grid ``(h, w)``
    (token ``i·w + j`` at row ``i``, column ``j``), giving maps ``A, B`` of shape ``(B, C, h, w)``.
    ``r`` is ``reduction``, ``σ`` the sigmoid, ``[·; ·]`` concatenation along channels.

    **FRM** (paper Eqs. 1–6):

    .. math::

        w^C = σ(W_2\\,\\mathrm{ReLU}(W_1 [\\mathrm{GAP}(A); \\mathrm{GAP}(B);
              \\mathrm{GMP}(A); \\mathrm{GMP}(B)])) = [w^C_A; w^C_B] \\in \\mathbb{R}^{2C}

        w^S = σ(\\mathrm{Conv}^{1×1}_{C/r→2}(\\mathrm{ReLU}(\\mathrm{Conv}^{1×1}_{2C→C/r}([A; B]))))
              = [w^S_A; w^S_B] \\in \\mathbb{R}^{2×h×w}

        A' = A + λ_C\\, w^C_B ⊙ B + λ_S\\, w^S_B ⊙ B, \\qquad
        B' = B + λ_C\\, w^C_A ⊙ A + λ_S\\, w^S_A ⊙ A

    (``W_1``: 4C → 4C/r, ``W_2``: 4C/r → 2C; each map is rectified by the *other* map weighted
    by the other map's half of the weights.)

    **FFM stage 1** (exchange, on tokens ``X_m``, ``H = heads``, ``d = C/(rH)``):

    .. math::

        [R_m; U_m] = \\mathrm{ReLU}(X_m P_m + p_m), \\qquad [K_m; V_m] = U_m W^{kv}_m

        G_m = \\mathrm{softmax}_{\\text{axis} -2}(K_m^⊤ V_m / \\sqrt{d})
              \\in \\mathbb{R}^{H×d×d}, \\qquad Z_a = U_a G_b, \\quad Z_b = U_b G_a

        X'_m = \\mathrm{LN}_m(X_m + E_m [R_m; Z_m] + e_m)

    (``P_m``: C → 2C/r, ReLU before the split; ``W^{kv}_m``: C/r → 2C/r without bias; the softmax
    runs over the key-channel axis of the ``d×d`` context; the queries are the unprojected
    ``U``; ``E_m``: 2C/r → C.)

    **FFM stage 2** (fusion, on the map ``M = [X'_a; X'_b]`` of shape ``(B, 2C, h, w)``):

    .. math::

        F = \\mathrm{BN}(\\mathrm{Conv}^{1×1}_{2C→C}(M) + \\mathrm{BN}(\\mathrm{Conv}^{1×1}_{C/r→C}(
            \\mathrm{ReLU}(\\mathrm{DWConv}^{3×3}(\\mathrm{Conv}^{1×1}_{2C→C/r}(M))))))

    (the first 1×1 convolution without bias.) Parameters: FRM ``26C²/r + 7C/r + 2C + 2`` and FFM
    ``2C² + 11C²/r + 4C²/r² + 15C/r + 11C``, i.e. ``43C² + 35C + 2`` at ``r = 1``. Linear layers
    start trunc-normal (std 0.02, zero bias), convolutions fan-out normal, norms at identity, as
    in the released code.

    What is adapted to MANGO's stage-level interface (``F`` is returned as the fused tokens of
    *both* modalities, one and the same tensor) is described in ``docs/baselines.md`` ("What is
    adapted, and why"). ``present`` is ignored: absent modalities arrive zero-filled and are fused
    as such. There is no density and no auxiliary loss. In training mode the BatchNorms need more
    than one value per channel (``B·h·w > 1``).

    Args:
        dim: token width ``C``.
        tokens: the token counts of the two modalities (equal, ``L``).
        heads: attention heads ``H`` of the FFM exchange; ``C/r`` must be divisible by it.
        reduction: channel reduction ``r`` of FRM and FFM (default 1, as in the released code).
        lambda_c: ``λ_C`` of the channel rectification (default 0.5, as released).
        lambda_s: ``λ_S`` of the spatial rectification (default 0.5, as released).
        grid: ``(h, w)`` with ``h·w = L`` (default ``None``: a ``1 × L`` map, so the 3×3
            depth-wise convolution only mixes neighbours along the sequence; pass the stage's
            ``(h, w)`` for image tokens).

    Example:
        >>> import torch
        >>> fusion = CMXFusion(8, [6, 6], heads=2, grid=(2, 3))
        >>> out = fusion([torch.randn(2, 6, 8), torch.randn(2, 6, 8)])
        >>> tuple(out.tokens[0].shape), out.tokens[0] is out.tokens[1], out.bits_per_dim
        ((2, 6, 8), True, None)
        >>> fusion.parameter_count() == 43 * 8**2 + 35 * 8 + 2
        True

    References:
        | CMX: Cross-Modal Fusion for RGB-X Semantic Segmentation with Transformers
        | (Zhang et al., T-ITS 2023)
        | https://arxiv.org/abs/2203.04838
        | https://github.com/huaaaliu/RGBX_Semantic_Segmentation
    """

    name = "cmx"
    aligned = True

    def __init__(
        self,
        dim: int,
        tokens: Sequence[int],
        heads: int,
        reduction: int = 1,
        lambda_c: float = 0.5,
        lambda_s: float = 0.5,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dim, tokens)
        if len(self.tokens) != 2:
            raise ConfigError(
                f"model.fusion: cmx fuses exactly 2 modalities, got {len(self.tokens)}"
            )
        length = self.tokens[0]
        height, width = (1, length) if grid is None else (int(grid[0]), int(grid[1]))
        if height < 1 or width < 1 or height * width != length:
            raise ConfigError(
                f"model.fusion: cmx grid (h, w) = ({height}, {width}) does not hold the "
                f"{length} tokens of each modality (needs h·w = {length})"
            )
        if reduction < 1 or dim % reduction != 0:
            raise ConfigError(
                f"fusion.reduction: cmx needs a reduction r ≥ 1 dividing the width {dim}, "
                f"got {reduction}"
            )
        if heads < 1 or (dim // reduction) % heads != 0:
            raise ConfigError(
                f"fusion.heads: cmx needs heads dividing width / reduction = {dim // reduction}, "
                f"got {heads}"
            )
        self.grid = (height, width)
        self.rectify = FeatureRectify(dim, reduction, lambda_c, lambda_s)
        self.exchange = CrossExchange(dim, reduction, heads)
        self.embed = ChannelEmbed(dim, reduction)
        self.apply(init_mit_weights)  # the released encoder's init (BatchNorms keep theirs)

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        batch = tokens[0].shape[0]
        height, width = self.grid
        a, b = (t.transpose(1, 2).reshape(batch, self.dim, height, width) for t in tokens)
        a, b = self.rectify(a, b)
        x_a, x_b = self.exchange(a.flatten(2).transpose(1, 2), b.flatten(2).transpose(1, 2))
        merged = torch.cat([x_a, x_b], dim=-1).transpose(1, 2).reshape(batch, -1, height, width)
        fused = self.embed(merged).flatten(2).transpose(1, 2)
        return FusionOutput([fused, fused])
