"""The signed ICA form, the attention coupling, and switching the attention off."""

from __future__ import annotations

import pytest
import torch

from mango.flows import (
    AffineCoupling,
    InvertibleCrossAttention,
    attention_disabled,
    health_terms,
)
from mango.testing.flows import acting_flow


def _signed(tokens=(6, 5), partition="imca", variant=2, strength=0.8, dim=4):
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(dim, tokens, partition, variant).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
        layer.strength.fill_(strength)
    return layer


def test_signed_form_is_unit_upper_triangular_with_zero_row_sums():
    layer = _signed()
    x = torch.randn(3, 11, 4, dtype=torch.float64)
    a, p = layer.attention_matrix(x, with_probabilities=True)
    n = (a - torch.eye(a.shape[-1], dtype=a.dtype)) / layer.strength_value
    assert torch.all(torch.tril(n) == 0), "N must be strictly upper triangular"
    assert torch.allclose(a.sum(-1), torch.ones_like(a[..., 0]))  # A 1 = 1
    assert torch.allclose(p[:, :-1].sum(-1), torch.ones_like(p[:, :-1, 0]))
    assert torch.all(p[:, -1] == 0) and torch.all(torch.tril(p) == 0)
    assert torch.allclose(layer(x)[1], torch.zeros(3, dtype=torch.float64))


def test_signed_inverse_is_bounded_by_the_strength():
    layer = _signed(tokens=(12, 12), partition="mmca", variant=1)
    a = layer.attention_matrix(torch.randn(4, 24, 4, dtype=torch.float64))
    inverse_norm = (
        torch.linalg.solve_triangular(a, torch.eye(12, dtype=a.dtype).expand_as(a), upper=True)
        .abs()
        .sum(-1)
        .amax()
    )
    assert inverse_norm <= 1 / (1 - layer.strength_value.abs()) + 1e-12


def test_signed_form_starts_at_the_identity_with_a_live_strength_gradient():
    layer = InvertibleCrossAttention(4, (5, 5), "mmca", 1)
    x = torch.randn(2, 10, 4)
    y, logdet = layer(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))
    (y * torch.randn_like(y)).sum().backward()
    assert layer.strength.grad.abs() > 0, "a linear gate must get a gradient at zero"


def test_signed_temperature_has_a_floor():
    layer = InvertibleCrossAttention(16, (4, 4), "mmca", 1)
    with torch.no_grad():
        layer.temperature_offset.fill_(-1e4)
    assert layer.temperature.item() == pytest.approx(4.0)  # √16


@pytest.mark.parametrize("bound", [0.0, 1.0, 1.5])
def test_strength_bound_must_keep_the_inverse_bounded(bound):
    with pytest.raises(ValueError, match="strength_bound"):
        InvertibleCrossAttention(4, (4, 4), "mmca", 1, strength_bound=bound)


def test_attention_disabled_makes_every_ica_layer_the_identity_and_restores():
    flow = acting_flow(
        6, (5, 4), blocks=2, dtype=torch.float32, coupling="attention", coupling_hidden=8
    )
    x = torch.randn(2, 9, 6)
    before = flow(x)[0]
    with attention_disabled(flow) as count:
        assert count == 2 * 8 + 2  # 8 ICA layers and one attention conditioner per block
        off = flow(x)[0]
        icas = [m for m in flow.modules() if isinstance(m, InvertibleCrossAttention)]
        assert all(torch.equal(layer(x)[0], x) for layer in icas)
        assert health_terms(flow, x).attention_effect() == 0.0
        assert (flow.inverse(off)[0] - x).norm() / x.norm() < 1e-5
    assert not torch.allclose(off, before)
    assert torch.equal(flow(x)[0], before)


def test_attention_conditioner_mixes_tokens_and_the_mlp_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 4)
    changed = x.clone()
    changed[0, 5] += 1.0  # only the last token's input changes
    for conditioner, mixes in (("mlp", False), ("attention", True)):
        layer = AffineCoupling(4, hidden=8, conditioner=conditioner, heads=2)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
        first_token = (layer(x)[0][0, 0] - layer(changed)[0][0, 0]).abs().max()
        assert (first_token > 1e-4) == mixes, conditioner


def test_health_terms_measure_the_change_of_x2():
    layer = _signed(tokens=(4, 4), partition="mmca", variant=1)
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    y = layer(x)[0]
    change, norm = layer.effect_terms(x, y)
    assert torch.allclose(change, (y[:, 4:] - x[:, 4:]).square().sum((1, 2)))
    assert torch.allclose(norm, x[:, 4:].square().sum((1, 2)))


def test_lica_effect_is_measured_in_the_mixed_order():
    layer = _signed(tokens=(5, 4), partition="lica", variant=1)
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    mixed = layer.mixing(x)[0]
    x1, x2 = mixed[:, layer.idx1], mixed[:, layer.idx2]
    expected = (layer.dense_forward(x1, x2)[0] - x2).square().sum((1, 2))
    change, norm = layer.effect_terms(x, layer(x)[0])
    assert torch.allclose(change, expected) and (change > 0).all()
    assert torch.allclose(norm, mixed[:, layer.idx2].square().sum((1, 2)))
