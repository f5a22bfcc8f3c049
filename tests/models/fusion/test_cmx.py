"""CMXFusion: parameter formulas, FRM and FFM re-stated independently, errors and gradients."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import Tensor

from mango.errors import ConfigError
from mango.models.fusion.cmx import CMXFusion

GRID = (2, 3)
HEADS = 2
LAMBDA_C, LAMBDA_S = 0.3, 0.7  # unequal, so that swapping them shows


def _frm_parameters(c: int, r: int) -> int:
    count = Fraction(26 * c * c, r) + Fraction(7 * c, r) + 2 * c + 2
    assert count.denominator == 1
    return int(count)


def _ffm_parameters(c: int, r: int) -> int:
    count = (
        2 * c * c
        + Fraction(11 * c * c, r)
        + Fraction(4 * c * c, r * r)
        + Fraction(15 * c, r)
        + 11 * c
    )
    assert count.denominator == 1
    return int(count)


def _randomised(reduction: int) -> CMXFusion:
    """A float64 fusion in eval mode whose weights and BN statistics are far from their init.

    At init the channel weights all sit near σ(0) = 0.5, which would hide swapped halves.
    """
    torch.manual_seed(0)
    fusion = CMXFusion(
        8,
        [6, 6],
        heads=HEADS,
        reduction=reduction,
        lambda_c=LAMBDA_C,
        lambda_s=LAMBDA_S,
        grid=GRID,
    ).double()
    with torch.no_grad():
        for parameter in fusion.parameters():
            parameter.normal_(0.0, 0.5)
        for module in fusion.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return fusion.eval()


def _weight_bias(layer: torch.nn.Module) -> tuple[Tensor, Tensor | None]:
    return layer.weight, layer.bias


def _pointwise(conv: torch.nn.Conv2d, x: Tensor) -> Tensor:
    """A 1×1 convolution as a channel matrix product."""
    out = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def _rectify(
    fusion: CMXFusion, a: Tensor, b: Tensor, swapped: bool = False
) -> tuple[Tensor, Tensor]:
    """FRM from the paper's equations; ``swapped`` weights each map by its own half (wrong)."""
    frm = fusion.rectify
    c = a.shape[1]
    w1, b1 = _weight_bias(frm.channel_mlp[0])
    w2, b2 = _weight_bias(frm.channel_mlp[2])
    pooled = torch.cat([a.mean((2, 3)), b.mean((2, 3)), a.amax((2, 3)), b.amax((2, 3))], dim=1)
    channel = torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2)
    channel_a, channel_b = channel[:, :c, None, None], channel[:, c:, None, None]
    both = torch.cat([a, b], dim=1)
    spatial = torch.sigmoid(
        _pointwise(frm.spatial_mlp[2], torch.relu(_pointwise(frm.spatial_mlp[0], both)))
    )
    spatial_a, spatial_b = spatial[:, 0:1], spatial[:, 1:2]
    if swapped:
        channel_a, channel_b, spatial_a, spatial_b = channel_b, channel_a, spatial_b, spatial_a
    return (
        a + LAMBDA_C * channel_b * b + LAMBDA_S * spatial_b * b,
        b + LAMBDA_C * channel_a * a + LAMBDA_S * spatial_a * a,
    )


def _context(fusion: CMXFusion, stream: int, interactive: Tensor, dim: int = -2) -> Tensor:
    """G_m head by head: softmax over the key-channel axis (``dim=-2``) of KᵀV / √d."""
    hidden = interactive.shape[-1]
    d = hidden // HEADS
    kv = interactive @ fusion.exchange.key_value[stream].weight.T  # (B, N, 2·C/r)
    heads = []
    for h in range(HEADS):
        key = kv[:, :, h * d : (h + 1) * d]
        value = kv[:, :, hidden + h * d : hidden + (h + 1) * d]
        scores = key.transpose(1, 2) @ value / d**0.5  # (B, d, d)
        weights = torch.exp(scores - scores.amax(dim=dim, keepdim=True))
        heads.append(weights / weights.sum(dim=dim, keepdim=True))
    return torch.stack(heads, dim=1)


def _layer_norm(norm: torch.nn.LayerNorm, x: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _exchange(fusion: CMXFusion, x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    """FFM stage 1 from the equations, with per-head loops for Z_a = U_a G_b, Z_b = U_b G_a."""
    ex = fusion.exchange
    hidden = ex.key_value[0].weight.shape[1]
    d = hidden // HEADS
    split = []
    for m, x in enumerate((x_a, x_b)):
        w, bias = _weight_bias(ex.split_proj[m])
        projected = torch.relu(x @ w.T + bias)
        split.append((projected[..., :hidden], projected[..., hidden:]))
    contexts = [_context(fusion, m, split[m][1]) for m in range(2)]
    outputs = []
    for m, x in enumerate((x_a, x_b)):
        residual, interactive = split[m]
        other = contexts[1 - m]
        read = torch.cat(
            [interactive[..., h * d : (h + 1) * d] @ other[:, h] for h in range(HEADS)], dim=-1
        )
        w, bias = _weight_bias(ex.end_proj[m])
        outputs.append(_layer_norm(ex.norm[m], x + torch.cat([residual, read], -1) @ w.T + bias))
    return outputs[0], outputs[1]


def _batch_norm_eval(norm: torch.nn.BatchNorm2d, x: Tensor) -> Tensor:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (x - norm.running_mean[None, :, None, None]) * scale[None, :, None, None] + norm.bias[
        None, :, None, None
    ]


def _embed(fusion: CMXFusion, merged: Tensor) -> Tensor:
    """FFM stage 2 in eval mode, from the equation."""
    emb = fusion.embed
    first, depthwise, _, last, inner_norm = emb.embed
    hidden = _pointwise(first, merged)
    hidden = torch.nn.functional.conv2d(
        hidden, depthwise.weight, depthwise.bias, padding=1, groups=hidden.shape[1]
    )
    branch = _batch_norm_eval(inner_norm, _pointwise(last, torch.relu(hidden)))
    return _batch_norm_eval(emb.norm, _pointwise(emb.residual, merged) + branch)


def _to_map(tokens: Tensor) -> Tensor:
    batch, _, c = tokens.shape
    return tokens.view(batch, GRID[0], GRID[1], c).permute(0, 3, 1, 2)


def _to_tokens(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


@pytest.mark.parametrize("c", [8, 16, 24])
@pytest.mark.parametrize("r", [1, 2])
def test_parameter_count_matches_frm_plus_ffm(c: int, r: int) -> None:
    fusion = CMXFusion(c, [6, 6], heads=2, reduction=r, grid=GRID)
    assert fusion.parameter_count() == _frm_parameters(c, r) + _ffm_parameters(c, r)
    assert sum(p.numel() for p in fusion.rectify.parameters()) == _frm_parameters(c, r)
    if r == 1:
        assert fusion.parameter_count() == 43 * c * c + 35 * c + 2


@pytest.mark.parametrize("r", [1, 2])
def test_rectification_is_cross_weighted(r: int) -> None:
    fusion = _randomised(r)
    a, b = torch.randn(3, 8, *GRID, dtype=torch.float64), torch.randn(3, 8, *GRID).double()
    with torch.no_grad():
        got = fusion.rectify(a, b)
        expected = _rectify(fusion, a, b)
        swapped = _rectify(fusion, a, b, swapped=True)
    for g, e, s in zip(got, expected, swapped, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(g, s, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("r", [1, 2])
def test_context_softmax_runs_over_key_channels(r: int) -> None:
    fusion = _randomised(r)
    interactive = torch.randn(3, 6, 8 // r, dtype=torch.float64)
    with torch.no_grad():
        got = [fusion.exchange.context(m, interactive) for m in range(2)]
        expected = [_context(fusion, m, interactive) for m in range(2)]
        over_columns = _context(fusion, 0, interactive, dim=-1)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (3, HEADS, 8 // r // HEADS, 8 // r // HEADS)
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[0].sum(-2), torch.ones_like(got[0].sum(-2)))
    assert not torch.allclose(got[0], over_columns, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("r", [1, 2])
def test_exchange_reads_the_other_stream(r: int) -> None:
    fusion = _randomised(r)
    x_a, x_b = torch.randn(3, 6, 8, dtype=torch.float64), torch.randn(3, 6, 8).double()
    with torch.no_grad():
        got = fusion.exchange(x_a, x_b)
        expected = _exchange(fusion, x_a, x_b)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r", [1, 2])
def test_whole_forward_in_eval_mode(r: int) -> None:
    fusion = _randomised(r)
    tokens = [torch.randn(3, 6, 8, dtype=torch.float64), torch.randn(3, 6, 8).double()]
    with torch.no_grad():
        out = fusion(tokens)
        rectified = _rectify(fusion, _to_map(tokens[0]), _to_map(tokens[1]))
        x_a, x_b = _exchange(fusion, *(_to_tokens(x) for x in rectified))
        expected = _to_tokens(_embed(fusion, _to_map(torch.cat([x_a, x_b], dim=-1))))
        flat = fusion(tokens, present=torch.tensor([[True, False]] * 3))
    assert out.tokens[0] is out.tokens[1]
    assert out.bits_per_dim is None and out.aux_loss is None
    torch.testing.assert_close(out.tokens[0], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flat.tokens[0], out.tokens[0], rtol=0, atol=0)  # present ignored


def test_default_grid_is_one_row() -> None:
    fusion = CMXFusion(8, [5, 5], heads=2)
    assert fusion.grid == (1, 5)
    assert fusion([torch.randn(2, 5, 8), torch.randn(2, 5, 8)]).tokens[0].shape == (2, 5, 8)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="model.fusion"):
        CMXFusion(8, [6, 4], heads=2)
    with pytest.raises(ConfigError, match="model.fusion.*2 modalities"):
        CMXFusion(8, [6, 6, 6], heads=2)
    with pytest.raises(ConfigError, match="model.fusion.*grid"):
        CMXFusion(8, [6, 6], heads=2, grid=(2, 2))
    with pytest.raises(ConfigError, match="fusion.heads"):
        CMXFusion(8, [6, 6], heads=3)
    with pytest.raises(ConfigError, match="fusion.heads"):
        CMXFusion(8, [6, 6], heads=8, reduction=2)
    with pytest.raises(ConfigError, match="fusion.reduction"):
        CMXFusion(8, [6, 6], heads=1, reduction=3)


@pytest.mark.parametrize("r", [1, 2])
def test_gradients_reach_every_parameter(r: int) -> None:
    torch.manual_seed(0)
    fusion = CMXFusion(8, [6, 6], heads=HEADS, reduction=r, grid=GRID).train()
    tokens = [torch.randn(3, 6, 8), torch.randn(3, 6, 8)]
    fused = fusion(tokens).tokens[0]
    (fused * torch.randn_like(fused)).sum().backward()  # a plain sum is flat after the last BN
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
