"""CrossAttentionFusion: size, the synchronous equations re-stated, interface."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mango.errors import ConfigError
from mango.models.fusion.cross_attention import CrossAttentionBlock, CrossAttentionFusion


def _fusion(tokens: list[int], dim: int = 8, layers: int = 2, heads: int = 2):
    """A float64 fusion in eval mode with every parameter random (LayerNorms included)."""
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim, tokens, layers=layers, heads=heads, ffn_ratio=2.0).double()
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return fusion.eval()


def _inputs(tokens: list[int], dim: int = 8, seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, dim, generator=generator, dtype=torch.float64) for n in tokens]


def _layer_norm(x: Tensor, norm: torch.nn.LayerNorm) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def _attention(query: Tensor, context: Tensor, attn: torch.nn.MultiheadAttention) -> Tensor:
    """Multi-head scaled dot-product attention written out: ``softmax(q kᵀ / √d) v``, merged."""
    heads = attn.num_heads
    width = query.shape[-1] // heads
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)

    def split(x: Tensor) -> Tensor:  # (B, L, D) -> (B, heads, L, width)
        return x.reshape(x.shape[0], x.shape[1], heads, width).transpose(1, 2)

    q, k, v = split(query @ wq.T + bq), split(context @ wk.T + bk), split(context @ wv.T + bv)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
    merged = (weights @ v).transpose(1, 2).reshape(query.shape)
    return merged @ attn.out_proj.weight.T + attn.out_proj.bias


def _step(block: CrossAttentionBlock, x: Tensor, context: Tensor) -> Tensor:
    """``x' = x + MHA(LN1(x), context)``, ``x'' = x' + FFN(LN2(x'))`` (context already normed)."""
    x = x + _attention(_layer_norm(x, block.norm1), context, block.attention)
    first, second = block.ffn[0], block.ffn[3]
    hidden = torch.nn.functional.gelu(_layer_norm(x, block.norm2) @ first.weight.T + first.bias)
    return x + hidden @ second.weight.T + second.bias


def _restated(fusion: CrossAttentionFusion, tokens: list[Tensor]) -> list[Tensor]:
    """§4.2 from the equations: every stream reads the others' normed layer *inputs*."""
    streams = list(tokens)
    for layer in fusion.layers:
        normed = [_layer_norm(x, block.norm1) for block, x in zip(layer, streams, strict=True)]
        streams = [
            _step(block, x, torch.cat([n for j, n in enumerate(normed) if j != m], dim=1))
            for m, (block, x) in enumerate(zip(layer, streams, strict=True))
        ]
    return [_layer_norm(x, norm) for norm, x in zip(fusion.norms, streams, strict=True)]


def _sequential(fusion: CrossAttentionFusion, tokens: list[Tensor]) -> list[Tensor]:
    """The common mistake (two modalities): b attends to the already-updated a'."""
    a, b = tokens
    for block_a, block_b in fusion.layers:
        a = _step(block_a, a, _layer_norm(b, block_b.norm1))
        b = _step(block_b, b, _layer_norm(a, block_a.norm1))
    return [_layer_norm(a, fusion.norms[0]), _layer_norm(b, fusion.norms[1])]


def _assert_all_close(got: list[Tensor], want: list[Tensor]) -> None:
    assert [t.shape for t in got] == [t.shape for t in want]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("dim", "ratio", "layers"), [(8, 4.0, 1), (16, 2.0, 2), (12, 1.5, 3)])
def test_parameter_count_matches_the_formula(dim: int, ratio: float, layers: int):
    fusion = CrossAttentionFusion(dim, [3, 2], layers=layers, heads=4, ffn_ratio=ratio)
    # (4 + 2r) D² + (9 + r) D per stream, r = hidden / D, kept in integers: r·D = hidden
    hidden = round(ratio * dim)
    per_stream = 4 * dim**2 + 2 * hidden * dim + 9 * dim + hidden
    assert per_stream == round((4 + 2 * ratio) * dim**2 + (9 + ratio) * dim)
    for layer in fusion.layers:
        assert sum(p.numel() for p in layer.parameters()) == 2 * per_stream
    assert fusion.parameter_count() == layers * 2 * per_stream + 2 * 2 * dim  # + 2 final LNs


def test_parameter_count_grows_linearly_with_modalities():
    two = CrossAttentionFusion(8, [3, 2], layers=2, heads=2).parameter_count()
    three = CrossAttentionFusion(8, [3, 2, 4], layers=2, heads=2).parameter_count()
    assert three == two * 3 // 2


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no-grad"])
def test_forward_matches_the_equations(grad: bool):
    """Unequal token counts, 2 heads, 2 layers."""
    fusion = _fusion([5, 3])
    tokens = _inputs([5, 3])
    with torch.set_grad_enabled(grad):
        out = fusion(tokens).tokens
    _assert_all_close(out, _restated(fusion, tokens))


def test_three_modalities_attend_to_the_concatenated_others():
    fusion = _fusion([4, 2, 3])
    tokens = _inputs([4, 2, 3])
    _assert_all_close(fusion(tokens).tokens, _restated(fusion, tokens))


def test_the_update_is_synchronous_not_sequential():
    fusion = _fusion([5, 3], layers=1)
    tokens = _inputs([5, 3])
    out = fusion(tokens).tokens
    _assert_all_close(out, _restated(fusion, tokens))
    sequential = _sequential(fusion, tokens)
    torch.testing.assert_close(out[0], sequential[0], rtol=0, atol=1e-10)  # a reads b's input
    assert (out[1] - sequential[1]).abs().max() > 1e-3  # b must read a's input, not a'


def test_each_stream_reads_the_others_but_not_itself_within_a_layer():
    fusion = _fusion([5, 3], layers=1)
    a, b = _inputs([5, 3])
    other_a, other_b = _inputs([5, 3], seed=3)  # new values (a constant shift: LN1 removes it)
    before = fusion([a, b]).tokens
    changed_b = fusion([a, other_b]).tokens
    assert (changed_b[0] - before[0]).abs().max() > 1e-3  # b's input reaches a in one layer
    # no self-attention inside a layer: a's token 0 sees only itself and b
    changed_a = fusion([torch.cat([a[:, :1], other_a[:, 1:]], dim=1), b]).tokens
    torch.testing.assert_close(changed_a[0][:, 0], before[0][:, 0], rtol=0, atol=1e-12)
    assert (changed_a[0][:, 1:] - before[0][:, 1:]).abs().max() > 1e-3


def test_mapping_and_vector_inputs_keep_their_shapes_and_names():
    fusion = CrossAttentionFusion(8, [4, 1], layers=1, heads=2)
    out = fusion({"a": torch.randn(2, 4, 8), "b": torch.randn(2, 8)})
    assert out.names == ("a", "b")
    assert {k: tuple(v.shape) for k, v in out.as_dict().items()} == {"a": (2, 4, 8), "b": (2, 8)}
    assert out.bits_per_dim is None and out.aux_loss is None


def test_gradients_reach_every_parameter():
    # at least 2 tokens per modality: one key alone gets softmax weight 1 and no q/k gradient
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
        CrossAttentionFusion(8, [3, 2], layers=1, heads=heads)


def test_one_modality_is_refused():
    with pytest.raises(ConfigError, match="model.fusion"):
        CrossAttentionFusion(8, [3], layers=1, heads=2)
