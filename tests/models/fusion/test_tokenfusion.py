"""TokenFusion: the exchange re-stated, the summed L1 loss, size formula, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.tokenfusion import TokenFusion

DIM, GRID = 8, (2, 3)
LENGTH = GRID[0] * GRID[1]


def _fusion(threshold: float = 0.02, layers: int = 2, grid=GRID, **kwargs) -> TokenFusion:
    """A float64 fusion in eval mode with every parameter random (scores spread over (0, 1))."""
    torch.manual_seed(0)
    fusion = TokenFusion(
        DIM,
        [LENGTH, LENGTH],
        layers=layers,
        heads=2,
        ffn_ratio=2.0,
        threshold=threshold,
        grid=grid,
        **kwargs,
    ).double()
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return fusion.eval()


def _score_follows_channel_zero(fusion: TokenFusion) -> None:
    """Set both score nets to ``s = sigmoid(LN(x)[0])`` (LN at identity): scores on both sides of
    0.5, known in advance. Every GELU sees ``LN(x)[0] + 10 > 7``, where GELU is the identity."""
    with torch.no_grad():
        for net in fusion.predictor:
            net[0].reset_parameters()
            for index in (1, 3, 5, 7):
                net[index].weight.zero_()
                net[index].weight[0, 0] = 1.0
                net[index].bias.zero_()
            for index in (1, 3, 5):
                net[index].weight[0, 0] = 1.0
            net[1].bias[0] = 10.0
            net[7].bias[0] = -10.0


def _inputs(seed: int = 1, batch: int = 3) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, LENGTH, DIM, generator=generator, dtype=torch.float64) for _ in "ab"]


# --- the equations written out with plain tensor operations -------------------------------------


def _layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def _linear(x: Tensor, layer: nn.Linear) -> Tensor:
    return x @ layer.weight.T + layer.bias


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _keep_score(x: Tensor, net: nn.Sequential) -> Tensor:
    """PredictorLG's score net: LN → Linear → GELU ×3 → Linear(D/4, 2); keep = softmax channel 0."""
    h = _layer_norm(x, net[0])
    for index in (1, 3, 5):
        h = _gelu(_linear(h, net[index]))
    logits = _linear(h, net[7])
    return logits[..., 0].exp() / logits.exp().sum(-1)


def _self_attention(x: Tensor, layer: nn.Module, heads: int) -> Tensor:
    """softmax(q kᵀ / √d) v per head (k: first D channels of kv, v: the next D), merged."""
    width = DIM // heads
    q, kv = _linear(x, layer.q), _linear(x, layer.kv)
    k, v = kv[..., :DIM], kv[..., DIM:]
    out = []
    for h in range(heads):
        part = slice(h * width, (h + 1) * width)
        weights = (q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(width)).softmax(-1)
        out.append(weights @ v[..., part])
    return torch.cat(out, dim=-1)


def _mix_ffn(x: Tensor, ffn: nn.Module, grid: tuple[int, int] | None) -> Tensor:
    """fc1 → 3x3 depth-wise conv on the row-major (h, w) grid (zero padding) → GELU → fc2."""
    hidden = _linear(x, ffn.fc1)
    if grid is not None:
        (h, w), (batch, _, channels) = grid, hidden.shape
        padded = hidden.new_zeros(batch, h + 2, w + 2, channels)
        padded[:, 1:-1, 1:-1] = hidden.reshape(batch, h, w, channels)  # token i·w + j at (i, j)
        conv = ffn.conv.bias.expand(batch, h, w, channels).clone()
        for di in range(3):
            for dj in range(3):
                conv = conv + padded[:, di : di + h, dj : dj + w] * ffn.conv.weight[:, 0, di, dj]
        hidden = conv.reshape(batch, h * w, channels)
    return _linear(_gelu(hidden), ffn.fc2)


def _reference(fusion: TokenFusion, x: list[Tensor], grid) -> tuple[list[Tensor], list[Tensor]]:
    """§1.1 steps 1–6 per layer, then the final LNs; returns the outputs and every score (B, L)."""
    x, scores = list(x), []
    batch, length, _ = x[0].shape
    for layer in fusion.layers:
        s = [_keep_score(x[m], fusion.predictor[m]) for m in range(2)]  # 1. on the pre-norm input
        u = [
            _linear(_self_attention(_layer_norm(x[m], layer.norm1[m]), layer, 2), layer.proj)
            for m in range(2)
        ]  # 2.
        scaled = [s[m].unsqueeze(-1) * u[m] for m in range(2)]  # 3.
        exchanged = [torch.empty_like(u[m]) for m in range(2)]
        for m in range(2):  # 4., one position at a time
            for b in range(batch):
                for i in range(length):
                    source = m if s[m][b, i] >= fusion.threshold else 1 - m
                    exchanged[m][b, i] = scaled[source][b, i]
        x = [x[m] + exchanged[m] for m in range(2)]  # 5.
        x = [x[m] + _mix_ffn(_layer_norm(x[m], layer.norm2[m]), layer.ffn, grid) for m in range(2)]
        scores += s
    return [_layer_norm(x[m], fusion.norm[m]) for m in range(2)], scores


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [GRID, None])
def test_matches_the_equations_with_tokens_both_kept_and_exchanged(grid):
    fusion = _fusion(threshold=0.5, grid=grid)
    _score_follows_channel_zero(fusion)
    x = _inputs(seed=3)
    expected, scores = _reference(fusion, x, grid)
    channel_zero = _layer_norm(x[0], fusion.predictor[0][0])[..., 0]
    torch.testing.assert_close(scores[0], torch.sigmoid(channel_zero), rtol=0, atol=1e-12)
    for s in scores:  # both branches of the exchange are exercised in every layer and stream
        assert (s < 0.5).any() and (s >= 0.5).any()
    out = fusion(x)
    for got, want in zip(out.tokens, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        out.aux_loss,
        fusion.sparsity_weight * sum(s.abs().sum() for s in scores),
        rtol=0,
        atol=1e-12,
    )
    rates = torch.stack([(s < 0.5).double().mean() for s in scores]).reshape(2, 2)
    torch.testing.assert_close(fusion.last_exchange_rate.double(), rates)


def test_score_net_matches_the_equations():
    fusion, x = _fusion(), _inputs()
    for m in range(2):
        torch.testing.assert_close(
            fusion.scores(x[m], m), _keep_score(x[m], fusion.predictor[m]), rtol=0, atol=1e-12
        )


def _set_scores(fusion: TokenFusion, stream: int, keep: float) -> None:
    """Make ``stream``'s keep score ``keep`` at every token (last Linear: zero weight, set bias)."""
    last = fusion.predictor[stream][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([math.log(keep), math.log(1 - keep)]))


def test_a_low_score_takes_the_other_streams_scaled_update():
    fusion = _fusion(layers=1)
    _set_scores(fusion, 0, 1e-3)  # stream a: below θ = 0.02 everywhere → exchanged
    _set_scores(fusion, 1, 0.3)  # stream b: kept, its update scaled by 0.3
    layer = fusion.layers[0]
    with torch.no_grad():  # no FFN: the output is LN(x + e)
        layer.ffn.fc2.weight.zero_()
        layer.ffn.fc2.bias.zero_()
    x = _inputs()
    out = fusion(x)
    update_a = layer.project(layer.attend(x[0], 0))
    update_b = layer.project(layer.attend(x[1], 1))
    torch.testing.assert_close(out.tokens[0], fusion.norm[0](x[0] + 0.3 * update_b))
    torch.testing.assert_close(out.tokens[1], fusion.norm[1](x[1] + 0.3 * update_b))
    for wrong in (x[0] + update_b, x[0] + 1e-3 * update_a):  # unscaled, or not exchanged
        assert (out.tokens[0] - fusion.norm[0](wrong)).abs().max() > 1e-3
    torch.testing.assert_close(fusion.last_exchange_rate, torch.tensor([[1.0, 0.0]]))
    batch = x[0].shape[0]  # a plain sum over batch and tokens, not a mean
    expected = fusion.sparsity_weight * batch * LENGTH * (1e-3 + 0.3)
    torch.testing.assert_close(out.aux_loss, torch.tensor(expected, dtype=torch.float64))


def test_nothing_is_exchanged_at_initialisation():
    torch.manual_seed(0)
    fusion = TokenFusion(DIM, [LENGTH, LENGTH], layers=2, heads=2, grid=GRID)
    x = [t.float() for t in _inputs()]
    fusion(x)
    assert fusion.last_exchange_rate.abs().max() == 0
    scores = fusion.scores(x[0], 0)
    assert (scores - 0.5).abs().max() < 0.05


def test_gradients_reach_the_predictor_through_the_scaled_update():
    fusion = _fusion(sparsity_weight=0.0).train()
    x = _inputs()
    out = fusion(x)
    sum(t.sum() for t in out.tokens).backward()  # the task path only: no L1 term
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(name.startswith("predictor.") for name, _ in fusion.named_parameters())


def test_sparsity_loss_alone_reaches_only_the_predictor():
    fusion = _fusion(sparsity_weight=1e-2)
    fusion(_inputs()).aux_loss.backward()
    for name, p in fusion.named_parameters():
        reached = p.grad is not None and p.grad.abs().sum() > 0
        # the scores of layer 2 see layer 1's output, so layer 1 is reached, layer 2 is not
        assert reached == (name.startswith(("predictor.", "layers.0."))), name


def _expected_count(dim: int, ratio: float, layers: int, mix: bool) -> float:
    r = round(ratio * dim) / dim
    per_layer = (4 + 2 * r) * dim**2 + (13 + r) * dim + 10 * r * dim * mix
    return layers * per_layer + (3.25 * dim**2 + 8.5 * dim + 4) + 4 * dim


@pytest.mark.parametrize("dim, ratio, layers", [(16, 4.0, 2), (32, 2.0, 1), (24, 3.0, 3)])
def test_parameter_count_matches_the_formula(dim, ratio, layers):
    tokens, grid = [12, 12], (3, 4)
    kwargs = {"layers": layers, "heads": 4, "ffn_ratio": ratio}
    mixed = TokenFusion(dim, tokens, **kwargs, grid=grid).parameter_count()
    plain = TokenFusion(dim, tokens, **kwargs, grid=grid, mix_ffn=False).parameter_count()
    no_grid = TokenFusion(dim, tokens, **kwargs).parameter_count()
    assert mixed == _expected_count(dim, ratio, layers, mix=True)
    assert plain == no_grid == _expected_count(dim, ratio, layers, mix=False)
    assert mixed - plain == layers * 10 * round(ratio * dim)


def test_the_depthwise_conv_takes_part_with_a_grid():
    fusion = _fusion(layers=1)
    x = _inputs()
    before = fusion(x).tokens[0]
    with torch.no_grad():
        fusion.layers[0].ffn.conv.weight[:, :, 0, 0] += 1.0
    assert (fusion(x).tokens[0] - before).abs().max() > 1e-3
    assert _fusion(layers=1, mix_ffn=False).layers[0].ffn.conv is None


def test_mapping_and_vector_shapes():
    fusion = TokenFusion(DIM, [LENGTH, LENGTH], layers=1, heads=2, grid=GRID)
    out = fusion({"rgb": torch.randn(2, LENGTH, DIM), "depth": torch.randn(2, LENGTH, DIM)})
    assert out.names == ("rgb", "depth")
    assert [tuple(t.shape) for t in out.as_dict().values()] == [(2, LENGTH, DIM)] * 2
    vectors = TokenFusion(DIM, [1, 1], layers=1, heads=2)([torch.randn(2, DIM)] * 2)
    assert [tuple(t.shape) for t in vectors.tokens] == [(2, DIM)] * 2


@pytest.mark.parametrize(
    "tokens, kwargs, field",
    [
        ([6, 4], {}, "model.fusion"),
        ([6, 6, 6], {}, "model.fusion"),
        ([6], {}, "model.fusion"),
        ([6, 6], {"heads": 3}, "fusion.heads"),
        ([6, 6], {"layers": 0}, "fusion.layers"),
        ([6, 6], {"grid": (2, 2)}, "model.fusion"),
    ],
)
def test_invalid_settings_raise_a_config_error(tokens, kwargs, field):
    settings = {"layers": 1, "heads": 2} | kwargs
    with pytest.raises(ConfigError, match=field):
        TokenFusion(8, tokens, **settings)


def test_width_not_divisible_by_four_is_refused():
    with pytest.raises(ConfigError, match="model.dim"):
        TokenFusion(6, [4, 4], layers=1, heads=2)
