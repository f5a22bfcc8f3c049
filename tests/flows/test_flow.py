"""MangoFlow: density, sampling, ActNorm persistence, 12-block conditioning, property tests, on
flows whose every layer acts (mango.testing.flows)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.flows import ActNorm, InvertibleCrossAttention, MangoFlow
from mango.testing.flows import acting_flow, idle_layers


def test_log_prob_is_normal_density_plus_logdet():
    flow = acting_flow(4, (4, 5))
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    z, logdet = flow(x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) + logdet
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-10)
    bpd = flow.bits_per_dim(x)
    assert torch.allclose(bpd, -expected / (9 * 4 * math.log(2)))


def test_sample_inverts_the_latent():
    flow = acting_flow(4, (4, 4))
    assert idle_layers(flow, torch.randn(6, 8, 4, dtype=torch.float64)) == []
    torch.manual_seed(1)
    x = flow.sample(6)
    torch.manual_seed(1)
    z = torch.randn(6, 8, 4, dtype=torch.float64)
    assert torch.allclose(flow(x)[0], z, atol=1e-10)


def test_actnorm_initialises_once_and_survives_reload():
    torch.manual_seed(0)
    a = ActNorm(3).train()
    first = torch.randn(64, 10, 3) * 4 + 2
    y, _ = a(first)  # the initialising batch itself comes out standardised per channel
    assert torch.allclose(y.mean((0, 1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 1), unbiased=False), torch.ones(3), atol=1e-5)
    b = ActNorm(3).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 10, 3) * 0.01 - 5
    assert torch.equal(a(x)[0], b(x)[0]) and bool(b.initialized)


def test_actnorm_initialises_a_channel_whose_mean_dwarfs_its_spread():
    """float32, mean 1e3, sd 1e-3: a one-pass E[x²] - E[x]² cancels to 0 (log-scale 13.8)."""
    torch.manual_seed(0)
    x = torch.randn(64, 10, 2) * torch.tensor([1e-3, 1.0]) + torch.tensor([1e3, 0.0])
    layer = ActNorm(2).train()
    y, _ = layer(x)
    assert abs(layer.log_scale[0].item() - math.log(1e3)) < 0.05, layer.log_scale
    assert abs(y[..., 0].std().item() - 1) < 0.05


def test_actnorm_does_not_initialise_in_eval_mode():
    layer = ActNorm(3).eval()
    x = torch.randn(2, 4, 3) * 5
    assert torch.equal(layer(x)[0], x) and not bool(layer.initialized)


def _init_flow(flow: MangoFlow, x: torch.Tensor) -> None:
    flow.train()
    with torch.no_grad():
        flow(x)
    flow.eval()


def test_twelve_blocks_round_trip_fp32_at_paper_size():
    """docs/flows.md cites this: 12 blocks, 64 + 64 tokens of 64 channels, float32, every layer
    acting (ActNorm initialised, every parameter moved by 0.05·N(0, 1))."""
    flow = acting_flow(64, (64, 64), blocks=12, scale=0.05, dtype=torch.float32, seed=3)
    x = torch.randn(4, 128, 64) * 2 + 1
    assert idle_layers(flow, x) == []
    with torch.no_grad():
        z, logdet = flow(x)
        x_back = flow.inverse(z)[0]
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all()
    assert ((x_back - x).norm() / x.norm()).item() <= 1e-5


def test_twelve_blocks_stay_invertible_after_training():
    """Train by maximum likelihood on correlated two-modality data, then check the round trip."""
    torch.manual_seed(0)
    dim, tokens = 16, (16, 16)
    mixing = torch.randn(dim, dim) / math.sqrt(dim)

    def batch() -> torch.Tensor:
        a = torch.randn(16, tokens[0], dim)
        b = a @ mixing + 0.1 * torch.randn(16, tokens[1], dim)  # b depends strongly on a
        return torch.cat([a, b], dim=1) * 2 + 1

    flow = MangoFlow(dim, tokens, blocks=12, coupling_hidden=32)  # trained: 30 steps below
    _init_flow(flow, batch())
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    start = flow.bits_per_dim(batch()).mean().item()
    for _ in range(30):
        loss = flow.bits_per_dim(batch()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow.eval()
    x = batch()
    with torch.no_grad():
        assert flow.bits_per_dim(x).mean().item() < start - 0.1
        x_back = flow.inverse(flow(x)[0])[0]
    assert ((x_back - x).norm() / x.norm()).item() <= 1e-5
    strengths = [
        m.strength_value.item() for m in flow.modules() if isinstance(m, InvertibleCrossAttention)
    ]
    assert max(abs(s) for s in strengths) > 0.02, "attention strengths did not learn"
    assert idle_layers(flow, x) == []


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    tokens=st.lists(st.integers(2, 7), min_size=2, max_size=3),
    dim=st.integers(2, 6),
    blocks=st.integers(1, 2),
)
def test_round_trip_property(batch, tokens, dim, blocks):
    flow = acting_flow(dim, tuple(tokens), blocks, scale=0.1, coupling_hidden=8)
    x = torch.randn(batch, sum(tokens), dim, dtype=torch.float64)
    z, logdet = flow(x)
    x_back, logdet_inv = flow.inverse(z)
    assert z.shape == x.shape and logdet.shape == (batch,)
    assert torch.allclose(x_back, x, atol=1e-9)
    assert torch.allclose(logdet_inv, -logdet, atol=1e-9)


def test_non_finite_tokens_are_a_clear_value_error():
    flow = MangoFlow(4, (3, 3), blocks=1)  # structural: the input check runs before any layer
    x = torch.randn(2, 6, 4)
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/Inf value"):
        flow(x)
    with pytest.raises(ValueError, match="inverse input"):
        flow.inverse(torch.full((1, 6, 4), float("inf")))


def test_flow_traces_into_one_compiled_graph():
    """``torch.compile`` sees the whole flow as one graph: no data-dependent Python branches."""
    torch.manual_seed(0)
    # structural: the traced graph, not the values
    flow = MangoFlow(8, (6, 4), blocks=2, coupling_hidden=8).train()
    x = torch.randn(2, 10, 8, requires_grad=True)
    flow(x)  # ActNorm initialisation happens eagerly, once
    explanation = torch._dynamo.explain(flow)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
