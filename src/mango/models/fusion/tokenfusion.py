"""TokenFusion (``model.fusion: tokenfusion``): score-gated exchange of attention updates.

Written from the released segmentation code's semantics (``docs/baselines.md``), adapted to one
fusion stage; see :class:`TokenFusion`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.base import Fusion, FusionOutput
from mango.models.fusion.two_stream import TwoStreamLayer, check_two_streams, init_mit_weights


def score_net(dim: int) -> nn.Sequential:
    """One stream's keep-score net of ``PredictorLG``: ``(B, L, D) -> (B, L, 2)`` logits.

    ``LN → Linear(D, D) → GELU → Linear(D, D/2) → GELU → Linear(D/2, D/4) → GELU →
    Linear(D/4, 2)``. Upstream ends in a LogSoftmax and the caller applies a softmax again; the
    result, ``softmax(logits)``, is the same, so the LogSoftmax is left out.
    """
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim),
        nn.GELU(),
        nn.Linear(dim, dim // 2),
        nn.GELU(),
        nn.Linear(dim // 2, dim // 4),
        nn.GELU(),
        nn.Linear(dim // 4, 2),
    )


class TokenFusion(Fusion):
    """TokenFusion: a stream's attention update is swapped for the other's where its score < ``θ``.

    Two streams ``x_a``, ``x_b`` ``(B, L, D)`` (position-aligned: token ``i`` of both is the same
    place) go through ``layers`` pre-norm transformer layers whose weights are shared between the
    streams, with LayerNorms per stream (:class:`~mango.models.fusion.two_stream.TwoStreamLayer`).
    One score predictor for the stage (two score nets ``P_a``, ``P_b``) is evaluated on each
    layer's input. Per layer, for stream ``m`` (``m̄`` the other)::

        s_m = softmax(P_m(x_m))[..., 0]              keep score (B, L), channel 0
        u_m = W_o · MHSA(LN1_m(x_m)) + b_o           attention update (B, L, D)
        ũ_m = s_m ⊙ u_m                              every update is scaled by its own score
        e_m[i] = ũ_m[i] if s_m[i] ≥ θ else ũ_m̄[i]    exchange: the other stream's SCALED update
        x_m ← x_m + e_m
        x_m ← x_m + FFN(LN2_m(x_m))

    and a final per-stream LayerNorm. The exchange replaces the attention-branch update, not the
    token: the residual path always carries the stream's own token. This is the released code;
    the paper's Eq. 6 substitutes the layer input instead. The threshold indicator has no
    gradient: the scores learn through the product ``s_m ⊙ u_m`` and the sparsity loss

        aux_loss = λ · Σ_layers Σ_m Σ_{batch, tokens} |s_m|

    a plain sum (not a mean), so ``λ`` (``sparsity_weight``, code default 1e-4) depends on the
    batch size and the token count. At initialisation every score is ≈ 0.5, so nothing is
    exchanged until this loss has pushed scores below ``θ``.

    What is adapted from the released code to one MANGO fusion stage is described in
    ``docs/baselines.md`` ("What is adapted, and why").

    The exchange rate of the last forward (fraction of tokens with ``s_m < θ``), per layer and
    stream, is kept in :attr:`last_exchange_rate` ``(layers, 2)`` for inspection.

    Parameters (shared weights once; ``r`` = ``ffn_ratio``): ``layers · [(4 + 2r) D² + (13 + r) D
    + 10 r D · mix] + 3.25 D² + 8.5 D + 4 + 4 D``.

    Args:
        dim: token width ``D`` (divisible by ``heads`` and by 4).
        tokens: token counts of the two modalities (equal).
        layers: transformer layers of the stage (at least 1).
        heads: attention heads.
        ffn_ratio: FFN width ``round(ffn_ratio · dim)`` (default 4.0).
        threshold: exchange threshold ``θ`` (default 0.02, as in the released code).
        sparsity_weight: ``λ`` of the summed L1 score loss (default 1e-4, the code default).
        mix_ffn: 3x3 depth-wise conv in the FFN (default ``True``; needs ``grid``).
        grid: ``(h, w)`` with ``h · w = L``, the tokens' row-major grid (default ``None``: no
            conv, a plain MLP).
        dropout: dropout on the attention-branch and FFN outputs (default 0.0: none).

    Example:
        >>> import torch
        >>> fusion = TokenFusion(8, [6, 6], layers=2, heads=2, grid=(2, 3))
        >>> out = fusion([torch.randn(3, 6, 8), torch.randn(3, 6, 8)])
        >>> [tuple(t.shape) for t in out.tokens], out.aux_loss.shape
        ([(3, 6, 8), (3, 6, 8)], torch.Size([]))
        >>> tuple(fusion.last_exchange_rate.shape)
        (2, 2)

    References:
        | Multimodal Token Fusion for Vision Transformers (Wang et al., CVPR 2022)
        | https://arxiv.org/abs/2204.08721
        | https://github.com/yikaiw/TokenFusion
    """

    name = "tokenfusion"
    aligned = True

    def __init__(
        self,
        dim: int,
        tokens: Sequence[int],
        layers: int,
        heads: int,
        ffn_ratio: float = 4.0,
        threshold: float = 0.02,
        sparsity_weight: float = 1e-4,
        mix_ffn: bool = True,
        grid: tuple[int, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, tokens)
        check_two_streams(self.name, dim, self.tokens, layers, heads, grid)
        if dim % 4:
            raise ConfigError(
                f"model.dim: tokenfusion's score predictor needs a multiple of 4, got {dim}"
            )
        self.threshold = float(threshold)
        self.sparsity_weight = float(sparsity_weight)
        hidden = round(ffn_ratio * dim)
        self.layers = nn.ModuleList(
            TwoStreamLayer(dim, heads, hidden, grid if mix_ffn else None, dropout)
            for _ in range(layers)
        )
        self.predictor = nn.ModuleList(score_net(dim) for _ in range(2))
        self.norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(2))
        self.apply(init_mit_weights)
        self.last_exchange_rate: Tensor | None = None

    def scores(self, x: Tensor, stream: int) -> Tensor:
        """Keep scores ``softmax(P_stream(x))[..., 0]`` ``(B, L)`` of one stream's tokens."""
        return self.predictor[stream](x).softmax(dim=-1)[..., 0]

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        x = list(tokens)
        l1 = x[0].new_zeros(())
        rates = []
        for layer in self.layers:
            scores = [self.scores(x[m], m) for m in range(2)]
            scaled = [
                s.unsqueeze(-1) * layer.project(layer.attend(x[m], m)) for m, s in enumerate(scores)
            ]
            keep = [(s >= self.threshold).unsqueeze(-1) for s in scores]
            x = [x[m] + torch.where(keep[m], scaled[m], scaled[1 - m]) for m in range(2)]
            x = [layer.feed_forward(x[m], m) for m in range(2)]
            l1 = l1 + scores[0].abs().sum() + scores[1].abs().sum()
            with torch.no_grad():
                rates.append(torch.stack([(~k).float().mean() for k in keep]))
        self.last_exchange_rate = torch.stack(rates)
        fused = [self.norm[m](x[m]) for m in range(2)]
        return FusionOutput(fused, aux_loss=self.sparsity_weight * l1)
