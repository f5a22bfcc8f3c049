"""Every flow layer: round trip, log-det against the float64 Jacobian, gradients, save/load."""

from __future__ import annotations

import pytest
import torch

from mango.flows import (
    ATTENTION_FORMS,
    CONDITIONERS,
    PARTITIONS,
    ActNorm,
    AffineCoupling,
    InvertibleCrossAttention,
    LUTokenMixing,
    MangoBlock,
    num_variants,
)
from mango.testing.flows import acting_flow

TOKEN_LAYOUTS = [(4, 4), (5, 3), (3, 4, 3), (2, 5, 4)]


def ica_cases():
    for tokens in TOKEN_LAYOUTS:
        for partition in PARTITIONS:
            for variant in range(1, num_variants(partition, len(tokens)) + 1):
                yield tokens, partition, variant


@pytest.mark.parametrize("tokens,partition,variant", list(ica_cases()))
@pytest.mark.parametrize("attention", ATTENTION_FORMS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "dense"])
def test_ica(tokens, partition, variant, attention, fused, layer_check, perturbed):
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(
        3, tokens, partition, variant, attention=attention, fused=fused
    )
    perturbed(layer)
    x = torch.randn(2, sum(tokens), 3)
    if attention == "signed" and layer.l2 == 2:  # N's rows have < 2 columns: N = 0 exactly
        assert torch.equal(layer(x)[0], x)
        return
    layer_check(layer, x)


def test_actnorm(layer_check, perturbed):
    layer = ActNorm(5)
    perturbed(layer)
    layer_check(layer.eval(), torch.randn(2, 4, 5))


@pytest.mark.parametrize("conditioner", CONDITIONERS)
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("dim", [2, 5])
def test_coupling(swap, dim, conditioner, layer_check, perturbed):
    layer = AffineCoupling(dim, hidden=8, swap=swap, conditioner=conditioner, heads=2)
    perturbed(layer)
    layer_check(layer, torch.randn(2, 4, dim))


def test_token_mixing(layer_check, perturbed):
    layer = LUTokenMixing(6, generator=torch.Generator().manual_seed(3))
    perturbed(layer, scale=0.2)
    layer_check(layer, torch.randn(2, 6, 3))


@pytest.mark.parametrize(
    "options",
    [{}, {"coupling": "attention"}, {"partitions": []}, {"attention": "gated"}],
    ids=["default", "attention-coupling", "coupling-only", "gated"],
)
@pytest.mark.parametrize("tokens", [(4, 3), (3, 3, 4)])
def test_block(tokens, options, layer_check, perturbed):
    torch.manual_seed(0)
    block = MangoBlock(4, tokens, coupling_hidden=8, **options)
    perturbed(block, scale=0.1)
    layer_check(block.eval(), torch.randn(2, sum(tokens), 4))


def test_flow_two_blocks_after_data_init(layer_check):
    flow = acting_flow(3, (4, 3), blocks=2, scale=0.1, coupling_hidden=8)
    layer_check(flow, torch.randn(2, 7, 3))


def test_token_mixing_weight_matches_forward():
    layer = LUTokenMixing(5, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        layer.lu.normal_()
        layer.log_s.normal_()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    expected = torch.einsum("ij,bjd->bid", layer.weight(torch.float64), x)
    assert torch.allclose(layer(x)[0], expected)
    assert torch.allclose(
        layer(x)[1], 3 * torch.linalg.slogdet(layer.weight(torch.float64))[1].expand(2)
    )


def test_extreme_parameters_stay_finite_and_invertible():
    """Numerical guards: bounded coupling scale, clamped temperature, positive diagonal of A."""
    torch.manual_seed(0)
    coupling = AffineCoupling(4, hidden=8)
    ica = InvertibleCrossAttention(4, (6, 6), "mmca", 1, attention="gated")
    with torch.no_grad():
        for p in coupling.parameters():
            p.fill_(1e3)  # raw scales of order 1e6 before the soft bound
        ica.log_temperature.fill_(-1e3)  # tau = e^-1000 without the clamp: scores overflow
        ica.gate.fill_(30.0)  # A almost exactly the softmax part
    x = torch.randn(2, 12, 4) * 10
    y, logdet = coupling(x)
    per_token = logdet / 12  # sum over tokens of the bounded log-scales
    assert torch.isfinite(y).all() and (per_token.abs() <= 2 * coupling.scale_bound + 1e-4).all()
    assert torch.isfinite(coupling.inverse(y)[0]).all()
    assert ica.temperature.item() == pytest.approx(1e-2)
    y, logdet = ica(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    diagonal = ica.attention_matrix(x).diagonal(dim1=-2, dim2=-1)
    assert (diagonal > 0).all()
