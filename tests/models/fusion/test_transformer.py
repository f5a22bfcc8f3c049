"""TransformerFusion: size formula, the equations re-stated, interface, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mango.errors import ConfigError
from mango.models.fusion.transformer import TransformerFusion


def _fusion(tokens: list[int], dim: int = 8, layers: int = 2, heads: int = 2) -> TransformerFusion:
    """A float64 fusion in eval mode with every parameter random (LayerNorms included)."""
    torch.manual_seed(0)
    fusion = TransformerFusion(dim, tokens, layers=layers, heads=heads, ffn_ratio=2.0).double()
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return fusion.eval()


def _inputs(tokens: list[int], dim: int = 8, seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, dim, generator=generator, dtype=torch.float64) for n in tokens]


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def _attention(query: Tensor, context: Tensor, in_weight, in_bias, out_weight, out_bias, heads):
    """Multi-head scaled dot-product attention written out: ``softmax(q kᵀ / √d) v``, merged."""
    width = query.shape[-1] // heads
    wq, wk, wv = in_weight.chunk(3)
    bq, bk, bv = in_bias.chunk(3)

    def split(x: Tensor) -> Tensor:  # (B, L, D) -> (B, heads, L, width)
        return x.reshape(x.shape[0], x.shape[1], heads, width).transpose(1, 2)

    q, k, v = split(query @ wq.T + bq), split(context @ wk.T + bk), split(context @ wv.T + bv)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
    merged = (weights @ v).transpose(1, 2).reshape(query.shape)
    return merged @ out_weight.T + out_bias


def _restated(fusion: TransformerFusion, tokens: list[Tensor]) -> list[Tensor]:
    """§4.1 from the equations, with the module's weights: concat, k pre-norm layers, LN_f, split."""
    z = torch.cat(tokens, dim=1)
    for layer in fusion.layers:
        attn = layer.self_attn
        normed = _layer_norm(z, layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        z = z + _attention(
            normed,
            normed,
            attn.in_proj_weight,
            attn.in_proj_bias,
            attn.out_proj.weight,
            attn.out_proj.bias,
            fusion.heads,
        )
        normed = _layer_norm(z, layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        hidden = torch.nn.functional.gelu(normed @ layer.linear1.weight.T + layer.linear1.bias)
        z = z + hidden @ layer.linear2.weight.T + layer.linear2.bias
    y = _layer_norm(z, fusion.norm.weight, fusion.norm.bias, fusion.norm.eps)
    return list(y.split([t.shape[1] for t in tokens], dim=1))


@pytest.mark.parametrize(("dim", "ratio", "layers"), [(8, 4.0, 1), (16, 2.0, 2), (12, 1.5, 3)])
def test_parameter_count_matches_the_formula(dim: int, ratio: float, layers: int):
    fusion = TransformerFusion(dim, [3, 2], layers=layers, heads=4, ffn_ratio=ratio)
    # (4 + 2r) D² + (9 + r) D with r = hidden / D, kept in integers: r·D = hidden
    hidden = round(ratio * dim)
    per_layer = 4 * dim**2 + 2 * hidden * dim + 9 * dim + hidden
    assert per_layer == round((4 + 2 * ratio) * dim**2 + (9 + ratio) * dim)
    for layer in fusion.layers:
        assert sum(p.numel() for p in layer.parameters()) == per_layer
    assert fusion.parameter_count() == layers * per_layer + 2 * dim  # + the final LayerNorm


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no-grad"])
def test_forward_matches_the_equations(grad: bool):
    """Unequal token counts, 2 heads, 2 layers; ``no-grad`` also covers PyTorch's fast path."""
    fusion = _fusion([5, 3])
    tokens = _inputs([5, 3])
    with torch.set_grad_enabled(grad):
        out = fusion(tokens).tokens
    expected = _restated(fusion, tokens)
    assert [t.shape for t in out] == [t.shape for t in tokens]
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_every_modality_attends_to_every_other():
    fusion = _fusion([4, 3, 2], layers=1)
    tokens = _inputs([4, 3, 2])
    before = fusion(tokens).tokens
    changed = [tokens[0], tokens[1], _inputs([2], seed=3)[0]]  # (a shift alone: LN removes it)
    after = fusion(changed).tokens
    assert not torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])


def test_a_single_modality_is_plain_self_attention():
    fusion = _fusion([4])
    tokens = _inputs([4])
    out = fusion(tokens).tokens
    torch.testing.assert_close(out[0], _restated(fusion, tokens)[0], rtol=0, atol=1e-10)


def test_mapping_and_vector_inputs_keep_their_shapes_and_names():
    fusion = TransformerFusion(8, [4, 1], layers=1, heads=2)
    out = fusion({"a": torch.randn(2, 4, 8), "b": torch.randn(2, 8)})
    assert out.names == ("a", "b")
    assert {k: tuple(v.shape) for k, v in out.as_dict().items()} == {"a": (2, 4, 8), "b": (2, 8)}
    assert out.bits_per_dim is None and out.aux_loss is None


def test_gradients_reach_every_parameter():
    fusion = _fusion([3, 2]).train()
    out = fusion(_inputs([3, 2])).tokens
    # a random projection: the plain sum of a LayerNorm's output has no gradient before it
    generator = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).sum() for t in out)
    loss.backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("heads", [3, 0])
def test_heads_must_divide_the_width(heads: int):
    with pytest.raises(ConfigError, match="fusion.heads"):
        TransformerFusion(8, [3, 2], layers=1, heads=heads)
