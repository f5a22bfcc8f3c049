"""ICA specifics: the partition table, the log-det formula, the attention matrix, bad input."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

import mango.flows
from mango.flows import InvertibleCrossAttention, partition_indices
from mango.testing.flows import acting_flow, idle_layers

PAPER_TABLE = {  # docs/design.md, tokens a = 0..3, b = 4..7
    ("mmca", 1): ([0, 1, 2, 3], [4, 5, 6, 7]),
    ("mmca", 2): ([4, 5, 6, 7], [0, 1, 2, 3]),
    ("imca", 1): ([0, 2, 4, 6], [1, 3, 5, 7]),
    ("imca", 2): ([0, 2, 5, 7], [1, 3, 4, 6]),
    ("imca", 3): ([1, 3, 4, 6], [0, 2, 5, 7]),
    ("imca", 4): ([1, 3, 5, 7], [0, 2, 4, 6]),
    ("lica", 1): ([0, 1, 2, 3], [4, 5, 6, 7]),
    ("lica", 2): ([4, 5, 6, 7], [0, 1, 2, 3]),
}


@pytest.mark.parametrize("key", list(PAPER_TABLE))
def test_partition_table(key):
    idx1, idx2 = partition_indices((4, 4), *key)
    assert (idx1.tolist(), idx2.tolist()) == PAPER_TABLE[key]


@pytest.mark.parametrize("tokens", [(3, 5, 2), (2, 2, 2, 2)])
@pytest.mark.parametrize("partition", ["mmca", "imca", "lica"])
def test_partitions_cover_all_tokens_for_many_modalities(tokens, partition):
    for variant in range(1, mango.flows.num_variants(partition, len(tokens)) + 1):
        idx1, idx2 = partition_indices(tokens, partition, variant)
        assert sorted(idx1.tolist() + idx2.tolist()) == list(range(sum(tokens)))
        assert len(idx1) > 0 and len(idx2) > 0


def test_mmca_rotates_the_transformed_modality():
    tokens = (2, 3, 4)
    transformed = [partition_indices(tokens, "mmca", v)[1].tolist() for v in (1, 2, 3)]
    assert transformed == [[2, 3, 4], [5, 6, 7, 8], [0, 1]]


def test_logdet_is_channels_times_log_diagonal_not_official_formula():
    """The official code's slogdet(A) * L / 2 is wrong whenever D != L / 2: this test catches it."""
    torch.manual_seed(0)
    dim, tokens = 5, (6, 6)
    layer = InvertibleCrossAttention(dim, tokens, "mmca", 1, attention="softmax").double()
    x = torch.randn(2, 12, dim, dtype=torch.float64)
    _, logdet = layer(x)
    a = layer.attention_matrix(x)
    ours = dim * torch.log(torch.diagonal(a, dim1=-2, dim2=-1)).sum(-1)
    official = torch.linalg.slogdet(a)[1] * sum(tokens) / 2
    assert torch.allclose(logdet, ours)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[0])
    reference = torch.linalg.slogdet(jac.reshape(60, 60))[1]
    assert torch.allclose(logdet[0], reference, atol=1e-8)
    assert not torch.allclose(official[0], reference, atol=1e-3)


def test_attention_is_upper_triangular_with_positive_diagonal():
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(4, (5, 3), "mmca", 1, attention="softmax")
    a = layer.attention_matrix(torch.randn(2, 8, 4))
    assert a.shape == (2, 3, 3)
    assert torch.all(torch.tril(a, -1) == 0)
    assert torch.all(torch.diagonal(a, dim1=-2, dim2=-1) > 0)
    assert torch.allclose(a.sum(-1), torch.ones(2, 3))


def test_gated_form_reaches_paper_and_half_forms():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    gated = InvertibleCrossAttention(4, (4, 4), "imca", 2, attention="gated").double()
    half = InvertibleCrossAttention(4, (4, 4), "imca", 2, attention="half").double()
    half.load_state_dict(gated.state_dict(), strict=False)
    with torch.no_grad():
        gated.gate.fill_(0.0)  # sigmoid(0) = 1/2
    assert torch.allclose(gated(x)[0], half(x)[0]) and torch.allclose(gated(x)[1], half(x)[1])


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.randn(2, 7, 4), "expected 8 tokens"),
        (torch.randn(2, 8, 3), "expected 4 channels"),
        (torch.randn(8, 4), "shaped \\(B, L, D\\)"),
        (torch.ones(2, 8, 4, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_input_is_a_clear_value_error(bad, message):
    layer = InvertibleCrossAttention(4, (4, 4), "mmca", 1)
    with pytest.raises(ValueError, match=message):
        layer(bad)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tokens": (4,)}, "at least 2 modalities"),
        ({"tokens": (4, 1)}, "at least 2 tokens"),
        ({"partition": "xyz"}, "partition must be one of"),
        ({"variant": 5}, "variants 1..4"),
        ({"attention": "sparse"}, "attention must be one of"),
    ],
)
def test_bad_construction_is_a_clear_value_error(kwargs, message):
    args = {"dim": 4, "tokens": (4, 4), "partition": "imca", "variant": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        InvertibleCrossAttention(**args)


def test_autocast_keeps_flow_math_in_float32():
    flow = acting_flow(8, (4, 4), blocks=1, dtype=torch.float32)
    x = torch.randn(2, 8, 8)
    assert idle_layers(flow, x) == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, logdet = flow(x)
    assert z.dtype == torch.float32 and logdet.dtype == torch.float32
    assert torch.allclose(z, flow(x)[0])


def test_flows_never_use_dense_determinants_or_inverses():
    source = pathlib.Path(mango.flows.__file__).parent
    code = "\n".join(p.read_text() for p in source.rglob("*.py"))
    code = re.sub(r'""".*?"""', "", code, flags=re.S)
    assert not re.search(r"slogdet|pinv|linalg\.inv\b|\.det\(|torch\.inverse", code)


@pytest.mark.parametrize(
    "partition,variant,tokens", [("mmca", 1, (9, 6)), ("imca", 3, (8, 8)), ("lica", 2, (5, 7))]
)
@pytest.mark.parametrize("key_dim", [None, 3, 9])
@pytest.mark.parametrize("attention", ["gated", "signed", "signed-flash"])
def test_fused_forward_and_gradients_equal_dense(
    partition, variant, tokens, key_dim, attention, monkeypatch
):
    """The fused kernels (the gated form's hand-written backward through the log-sum-exp, the
    signed form's one-node pass with its hand-written backward, and its shifted causal
    attention used for long sequences) match autograd on the dense matrix A."""
    if attention == "signed-flash":
        monkeypatch.setattr("mango.flows.kernels.DENSE_MAX_TOKENS", 0)
        attention = "signed"
    torch.manual_seed(0)
    dense = InvertibleCrossAttention(
        5, tokens, partition, variant, attention=attention, key_dim=key_dim, fused=False
    ).double()
    with torch.no_grad():
        for p in dense.parameters():
            p.add_(0.3 * torch.randn_like(p))
    fused = InvertibleCrossAttention(
        5, tokens, partition, variant, attention=attention, key_dim=key_dim, fused=True
    ).double()
    fused.load_state_dict(dense.state_dict())
    if partition == "lica":
        fused.mixing.permutation.copy_(dense.mixing.permutation)
    x = torch.randn(3, sum(tokens), 5, dtype=torch.float64)
    grads = []
    for layer in (dense, fused):
        xi = x.clone().requires_grad_()
        y, logdet = layer(xi)
        weight = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
        ((y * weight).sum() + 0.7 * logdet.sum()).backward()
        grads.append(
            (y.detach(), logdet.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()])
        )
        layer.zero_grad()
    (y_d, ld_d, gx_d, gp_d), (y_f, ld_f, gx_f, gp_f) = grads
    assert torch.allclose(y_d, y_f, atol=1e-12) and torch.allclose(ld_d, ld_f, atol=1e-12)
    assert torch.allclose(gx_d, gx_f, atol=1e-10)
    for a, b in zip(gp_d, gp_f, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("attention", ["gated", "softmax", "identity_plus", "signed"])
def test_no_grad_inverse_equals_autograd_inverse(attention):
    """The buffer-reusing inverse used under no_grad computes the same A and log-det."""
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(4, (7, 5), "mmca", 2, attention=attention).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y = torch.randn(3, 12, 4, dtype=torch.float64)
    x_grad, ld_grad = layer.inverse(y)
    with torch.no_grad():
        x_fast, ld_fast = layer.inverse(y)
    assert torch.allclose(x_grad, x_fast, atol=1e-12) and torch.allclose(
        ld_grad, ld_fast, atol=1e-12
    )
