"""Affine coupling over channels (RealNVP), applied token by token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.flows.base import FlowLayer


def soft_bound(a: Tensor, bound: float) -> Tensor:
    """Smoothly map ``a`` into ``(-bound, bound)``: ``bound * tanh(a / bound)`` (identity near 0)."""
    return bound * torch.tanh(a / bound)


#: conditioner networks of :class:`AffineCoupling`
CONDITIONERS = ("mlp", "attention")


class AttentionConditioner(nn.Module):
    """A conditioner that sees every token: one pre-norm self-attention layer, then an MLP.

    .. math::

        u = x W_e, \\quad u \\leftarrow u + \\mathrm{MHA}(\\mathrm{LN}(u)), \\quad
        h(x) = \\mathrm{MLP}(\\mathrm{LN}(u)),

    with full (unmasked) attention over all ``L`` tokens, so the scale and shift of one token's
    transformed channels depend on the conditioning channels of every token of every modality.
    A coupling stays invertible for any conditioner of the untouched half. Setting
    ``attention_enabled = False`` drops the attention term (the ablation of ``--ablate attention``).

    Args:
        in_dim: channels of the conditioning half ``x`` (per token).
        hidden: width of the embedding, the attention and the MLP's hidden layer (divisible by
            ``heads``).
        out_dim: output channels per token (``2 ×`` the transformed half: scale and shift).
        heads: attention heads (default 4).

    Example:
        >>> conditioner = AttentionConditioner(4, hidden=8, out_dim=6, heads=2)
        >>> tuple(conditioner(torch.randn(2, 5, 4)).shape)
        (2, 5, 6)

    References:
        | Attention Is All You Need (Vaswani et al., NeurIPS 2017)
        | https://arxiv.org/abs/1706.03762
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, heads: int = 4) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"coupling hidden width {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.attention_enabled = True
        self.embed = nn.Linear(in_dim, hidden)
        self.norm_attention = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.norm_out = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        u = self.embed(x)
        if self.attention_enabled:
            b, length, width = u.shape
            qkv = self.qkv(self.norm_attention(u)).view(b, length, 3, self.heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            mixed = F.scaled_dot_product_attention(q, k, v)
            u = u + self.attention_out(mixed.transpose(1, 2).reshape(b, length, width))
        return self.mlp(self.norm_out(u))


class AffineCoupling(FlowLayer):
    """Affine coupling that splits the channels of every token in two halves.

    With ``x = [x_a, x_b]`` along channels (``x_a`` the first ``D // 2`` channels, or the last
    ones when ``swap=True``) and a conditioner network ``h`` applied to each token,

    .. math::

        (\\tilde s, t) = h(x_a), \\quad s = c \\tanh(\\tilde s / c), \\quad
        y_a = x_a, \\quad y_b = x_b \\odot e^{s} + t,

        x_b = (y_b - t) \\odot e^{-s}, \\qquad \\log|\\det J| = \\sum_{l, d} s_{l, d}.

    The scale is soft-bounded by ``c = scale_bound`` so it cannot overflow, and the last layer of
    ``h`` is zero-initialised so a new coupling is the identity. ``conditioner="mlp"`` applies
    ``h`` to each token alone; ``"attention"`` (:class:`AttentionConditioner`) lets it attend
    over all tokens, so the coupling moves information between tokens and modalities.

    Args:
        dim: channels ``D`` of a token (at least 2).
        hidden: hidden width of the conditioner ``h`` (default 64).
        swap: condition on the last half and transform the first (default ``False``: condition
            on the first ``D // 2`` channels); alternate it between layers.
        scale_bound: the bound ``c`` of the log-scale ``s`` (default 2.0).
        conditioner: ``"mlp"`` (default: a two-hidden-layer GELU MLP per token) or
            ``"attention"`` (:class:`AttentionConditioner` over all tokens).
        heads: attention heads of the ``"attention"`` conditioner (default 4; unused by
            ``"mlp"``).

    Example:
        >>> layer = AffineCoupling(dim=6, hidden=16)
        >>> x = torch.randn(2, 4, 6)
        >>> y, logdet = layer(x)
        >>> torch.equal(y, x), logdet.tolist()   # identity at initialisation
        (True, [0.0, 0.0])

    References:
        | Density estimation using Real NVP (Dinh et al., ICLR 2017)
        | https://arxiv.org/abs/1605.08803
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        swap: bool = False,
        scale_bound: float = 2.0,
        conditioner: str = "mlp",
        heads: int = 4,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling: dim must be >= 2 to split channels, got {dim}")
        self.dim = dim
        self.swap = swap
        self.scale_bound = scale_bound
        self.cond_dim = dim // 2 if not swap else dim - dim // 2
        self.out_dim = dim - self.cond_dim
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {conditioner!r}")
        self.conditioner = conditioner
        if conditioner == "attention":
            self.net: nn.Module = AttentionConditioner(
                self.cond_dim, hidden, 2 * self.out_dim, heads
            )
            last = self.net.mlp[-1]
        else:
            self.net = nn.Sequential(
                nn.Linear(self.cond_dim, hidden),
                nn.GELU(),
                nn.Linear(hidden, hidden),
                nn.GELU(),
                nn.Linear(hidden, 2 * self.out_dim),
            )
            last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.swap:
            x_b, x_a = x.split([self.out_dim, self.cond_dim], dim=-1)
        else:
            x_a, x_b = x.split([self.cond_dim, self.out_dim], dim=-1)
        return x_a, x_b

    def _merge(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        return torch.cat([x_b, x_a] if self.swap else [x_a, x_b], dim=-1)

    def _scale_shift(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.net(x_a).chunk(2, dim=-1)
        return soft_bound(raw_scale, self.scale_bound), shift

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        scale, shift = self._scale_shift(x_a)
        y_b = x_b * scale.exp() + shift
        return self._merge(x_a, y_b), scale.flatten(1).sum(1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y_a, y_b = self._split(y)
        scale, shift = self._scale_shift(y_a)
        x_b = (y_b - shift) * (-scale).exp()
        return self._merge(y_a, x_b), -scale.flatten(1).sum(1)
