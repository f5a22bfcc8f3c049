"""GeminiFusion: the pixel-wise attention and the layer re-stated, size formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.geminifusion import GeminiFusion, PixelwiseCrossAttention

DIM, GRID, FUSION_HEADS = 8, (2, 3), 4
LENGTH = GRID[0] * GRID[1]


def _fusion(layers: int = 2, grid=GRID, **kwargs) -> GeminiFusion:
    """A float64 fusion in eval mode with every parameter random (LayerNorms included)."""
    torch.manual_seed(0)
    fusion = GeminiFusion(
        DIM, [LENGTH, LENGTH], layers=layers, heads=2, ffn_ratio=2.0,
        fusion_heads=FUSION_HEADS, grid=grid, **kwargs,
    ).double()  # fmt: skip
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return fusion.eval()


def _inputs(seed: int = 1, batch: int = 2) -> list[Tensor]:
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


def _pixelwise(module: PixelwiseCrossAttention, own: Tensor, other: Tensor, m: int) -> Tensor:
    """§2.2 one position at a time: ρ over channels, two slots, softmax over the slots per head."""
    attention = module.attention[m]
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
    first, second = module.relation[0], module.relation[2]
    heads = attention.num_heads
    width = own.shape[-1] // heads
    out = torch.empty_like(own)
    for b in range(own.shape[0]):
        for i in range(own.shape[1]):
            a, o = own[b, i], other[b, i]
            z = second.weight @ _gelu(first.weight @ torch.cat([a, o]) + first.bias) + second.bias
            rho = z.exp() / z.exp().sum()
            query = w_q @ a + b_q
            keys = (w_k @ (a + module.key_noise.weight[m]) + b_k, w_k @ (a * rho) + b_k)
            values = (w_v @ (a + module.value_noise.weight[m]) + b_v, w_v @ o + b_v)
            merged = []
            for h in range(heads):
                part = slice(h * width, (h + 1) * width)
                logits = torch.stack([query[part] @ k[part] for k in keys]) / math.sqrt(width)
                weights = logits.exp() / logits.exp().sum()
                merged.append(weights[0] * values[0][part] + weights[1] * values[1][part])
            out[b, i] = attention.out_proj.weight @ torch.cat(merged) + attention.out_proj.bias
    return out


def _reference(fusion: GeminiFusion, x: list[Tensor], grid) -> list[Tensor]:
    """§2.1 steps 1–4 per layer, then the final LNs."""
    x = list(x)
    for layer, pixelwise in zip(fusion.layers, fusion.fusions, strict=True):
        s = [_self_attention(_layer_norm(x[m], layer.norm1[m]), layer, 2) for m in range(2)]
        f = [s[m] + _pixelwise(pixelwise, s[m], s[1 - m], m) for m in range(2)]
        x = [x[m] + _linear(f[m], layer.proj) for m in range(2)]
        x = [x[m] + _mix_ffn(_layer_norm(x[m], layer.norm2[m]), layer.ffn, grid) for m in range(2)]
    return [_layer_norm(x[m], fusion.norm[m]) for m in range(2)]


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [0, 1])
def test_pixelwise_attention_matches_the_per_position_equations(direction):
    module = _fusion().fusions[0]
    own, other = _inputs(seed=2)
    expected = _pixelwise(module, own, other, direction)
    torch.testing.assert_close(module(own, other, direction), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("direction", [0, 1])
def test_pixelwise_attention_matches_upstream_multihead_attention_call(direction):
    """Upstream's form: nn.MultiheadAttention with the positions as its batch, 2 keys each."""
    module = _fusion().fusions[0]
    own, other = (t.reshape(1, -1, DIM) for t in _inputs(seed=2))  # (1, B·L, D)
    rho = module.relation(torch.cat([own, other], dim=-1))
    keys = torch.cat([own + module.key_noise.weight[direction], own * rho])  # (2, B·L, D)
    values = torch.cat([own + module.value_noise.weight[direction], other])
    expected, _ = module.attention[direction](own, keys, values)
    torch.testing.assert_close(module(own, other, direction), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("grid", [GRID, None])
def test_matches_the_equations(grid):
    fusion = _fusion(grid=grid)
    x = _inputs()
    out = fusion(x)
    for got, want in zip(out.tokens, _reference(fusion, x, grid), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert out.aux_loss is None and out.bits_per_dim is None


def test_relation_is_a_softmax_over_channels():
    module = _fusion().fusions[0]
    own, other = _inputs()
    rho = module.relation(torch.cat([own, other], dim=-1))
    assert rho.shape == own.shape and (rho > 0).all()
    torch.testing.assert_close(rho.sum(-1), torch.ones_like(rho[..., 0]))
    assert rho.std(-1).min() > 1e-3  # not uniform: the random relation MLP discriminates


def test_other_stream_enters_only_through_the_cross_value_when_relation_is_fixed():
    """With ρ constant the slot weights depend on the own stream only, so the output is affine in
    the other stream's tokens: a key built from the other stream would break this."""
    module = _fusion().fusions[0]
    with torch.no_grad():
        module.relation[2].weight.zero_()  # ρ = softmax(c₂), the same at every position
    own, other = _inputs(seed=3)
    step = torch.randn_like(other)
    outputs = [module(own, other + k * step, 0) for k in range(3)]
    torch.testing.assert_close(outputs[2] - outputs[1], outputs[1] - outputs[0], rtol=0, atol=1e-10)
    assert (outputs[1] - outputs[0]).abs().max() > 1e-3
    with torch.no_grad():  # and with the relation live, ρ depends on the other stream too
        module.relation[2].weight.normal_()
    outputs = [module(own, other + k * step, 0) for k in range(3)]
    assert ((outputs[2] - outputs[1]) - (outputs[1] - outputs[0])).abs().max() > 1e-6


def test_gradients_reach_every_parameter():
    fusion = _fusion().train()
    x = [t.requires_grad_() for t in _inputs()]
    sum(t.sum() for t in fusion(x).tokens).backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in x)


def test_initialisation_follows_upstream():
    torch.manual_seed(0)
    module = GeminiFusion(64, [4, 4], layers=1, heads=2).fusions[0]
    assert module.attention[0].out_proj.weight.std() < 0.03  # trunc-normal 0.02 (MiT's hook)
    assert module.relation[0].weight.std() < 0.03
    assert module.attention[0].in_proj_weight.std() > 0.05  # MultiheadAttention's xavier
    assert 0.7 < module.key_noise.weight.std() < 1.3  # nn.Embedding's N(0, 1)
    assert module.attention[0] is not module.attention[1]


def _expected_count(dim: int, ratio: float, layers: int, mix: bool) -> float:
    r = round(ratio * dim) / dim
    shared = (4 + 2 * r) * dim**2 + (13 + r) * dim + 10 * r * dim * mix
    return layers * (shared + 11 * dim**2 + 14 * dim) + 4 * dim


@pytest.mark.parametrize("dim, ratio, layers", [(16, 4.0, 2), (32, 2.0, 1), (24, 3.0, 3)])
def test_parameter_count_matches_the_formula(dim, ratio, layers):
    tokens, grid = [12, 12], (3, 4)
    kwargs = {"layers": layers, "heads": 4, "ffn_ratio": ratio}
    mixed = GeminiFusion(dim, tokens, **kwargs, grid=grid).parameter_count()
    plain = GeminiFusion(dim, tokens, **kwargs, grid=grid, mix_ffn=False).parameter_count()
    no_grid = GeminiFusion(dim, tokens, **kwargs).parameter_count()
    assert mixed == _expected_count(dim, ratio, layers, mix=True)
    assert plain == no_grid == _expected_count(dim, ratio, layers, mix=False)
    assert mixed - plain == layers * 10 * round(ratio * dim)
    module = PixelwiseCrossAttention(dim, 8)
    assert sum(p.numel() for p in module.parameters()) == 11 * dim**2 + 14 * dim


def test_the_depthwise_conv_takes_part_with_a_grid():
    fusion = _fusion(layers=1)
    x = _inputs()
    before = fusion(x).tokens[0]
    with torch.no_grad():
        fusion.layers[0].ffn.conv.weight[:, :, 0, 0] += 1.0
    assert (fusion(x).tokens[0] - before).abs().max() > 1e-3
    assert _fusion(layers=1, mix_ffn=False).layers[0].ffn.conv is None


def test_mapping_and_vector_shapes():
    fusion = GeminiFusion(DIM, [LENGTH, LENGTH], layers=1, heads=2, grid=GRID)
    out = fusion({"rgb": torch.randn(2, LENGTH, DIM), "depth": torch.randn(2, LENGTH, DIM)})
    assert out.names == ("rgb", "depth")
    assert [tuple(t.shape) for t in out.as_dict().values()] == [(2, LENGTH, DIM)] * 2
    vectors = GeminiFusion(DIM, [1, 1], layers=1, heads=2)([torch.randn(2, DIM)] * 2)
    assert [tuple(t.shape) for t in vectors.tokens] == [(2, DIM)] * 2


@pytest.mark.parametrize(
    "tokens, kwargs, field",
    [
        ([6, 4], {}, "model.fusion"),
        ([6, 6, 6], {}, "model.fusion"),
        ([6], {}, "model.fusion"),
        ([6, 6], {"heads": 3}, "fusion.heads"),
        ([6, 6], {"fusion_heads": 3}, "fusion.fusion_heads"),
        ([6, 6], {"layers": 0}, "fusion.layers"),
        ([6, 6], {"grid": (2, 2)}, "model.fusion"),
    ],
)
def test_invalid_settings_raise_a_config_error(tokens, kwargs, field):
    settings = {"layers": 1, "heads": 2} | kwargs
    with pytest.raises(ConfigError, match=field):
        GeminiFusion(8, tokens, **settings)
