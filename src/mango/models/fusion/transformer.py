"""Joint self-attention (``model.fusion: transformer``): one pre-norm Transformer over all tokens.

The single-stream baseline of ``docs/baselines.md`` (ViLT's design): every modality's tokens are
concatenated into one sequence, so each token attends to every token of every modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion, FusionOutput


def attention_hidden(dim: int, layers: int, heads: int, ffn_ratio: float) -> int:
    """Check the options of an attention baseline; return the FFN width ``round(ffn_ratio · dim)``.

    Raises:
        ConfigError: ``heads`` does not divide ``dim``, ``layers < 1``, or the FFN is empty.
    """
    if heads < 1 or dim % heads:
        raise ConfigError(
            f"fusion.heads: {heads} attention heads do not divide model.dim {dim}; "
            f"choose a divisor of {dim}"
        )
    if layers < 1:
        raise ConfigError(f"fusion.layers: needs at least 1 layer, got {layers}")
    hidden = round(ffn_ratio * dim)
    if hidden < 1:
        raise ConfigError(
            f"fusion.ffn_ratio: {ffn_ratio} · model.dim {dim} rounds to an empty FFN; "
            f"use a larger ratio"
        )
    return hidden


class TransformerFusion(Fusion):
    r"""Joint self-attention: a pre-norm Transformer encoder over the concatenated tokens.

    With :math:`x_m \in \mathbb{R}^{B \times L_m \times D}` the tokens of modality :math:`m`:

    .. math::
        z^0 &= [x_1; \dots; x_M] \in \mathbb{R}^{B \times (L_1 + \dots + L_M) \times D} \\
        z &\leftarrow z + \mathrm{MHSA}(\mathrm{LN}_1(z)) \\
        z &\leftarrow z + \mathrm{FFN}(\mathrm{LN}_2(z)),
            \quad \mathrm{FFN} = \mathrm{Linear}(D, H) \to \mathrm{GELU} \to \mathrm{Linear}(H, D)

    for each of the ``layers`` layers (own weights per layer), then :math:`y = \mathrm{LN}_f(z)`
    split back into :math:`y_m` of the input shapes. :math:`H = \mathrm{round}(r D)` with
    ``r = ffn_ratio``; MHSA has ``heads`` heads of width ``D / heads``. One layer holds
    :math:`(4 + 2r) D^2 + (9 + r) D` parameters, the whole fusion ``layers`` times that plus
    :math:`2D` (``LN_f``). Works for any number of modalities and unequal token counts; the cost
    is quadratic in the total token count.

    No position or modality embeddings are added here; that adaptation from ViLT is described in
    ``docs/baselines.md`` ("What is adapted, and why"). ``present`` is accepted and ignored:
    absent modalities arrive zero-filled and are attended to like any other tokens.

    Args:
        dim: token width ``D`` (divisible by ``heads``).
        tokens: token counts ``L_m`` of the modalities (any number, may differ).
        layers: Transformer layers (at least 1).
        heads: attention heads.
        ffn_ratio: FFN width ``H = round(ffn_ratio · dim)`` (default 4.0).
        dropout: dropout inside every layer (default 0.0: none).

    Example:
        >>> import torch
        >>> fusion = TransformerFusion(dim=8, tokens=[3, 2], layers=1, heads=2)
        >>> out = fusion([torch.randn(2, 3, 8), torch.randn(2, 2, 8)])
        >>> [tuple(t.shape) for t in out.tokens], out.bits_per_dim, out.aux_loss
        ([(2, 3, 8), (2, 2, 8)], None, None)
        >>> fusion.parameter_count() == (4 + 2 * 4) * 8**2 + (9 + 4) * 8 + 2 * 8
        True

    References:
        | Attention Is All You Need (Vaswani et al., NeurIPS 2017)
        | https://arxiv.org/abs/1706.03762
        | ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision
        | (Kim et al., ICML 2021)
        | https://arxiv.org/abs/2102.03334
    """

    name = "transformer"
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
        hidden = attention_hidden(dim, layers, heads, ffn_ratio)
        self.heads = heads
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=hidden,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        z = torch.cat(tokens, dim=1)
        for layer in self.layers:
            z = layer(z)
        return FusionOutput(list(self.norm(z).split(self.tokens, dim=1)))
