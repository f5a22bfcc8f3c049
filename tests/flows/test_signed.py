"""The signed form's one-node pass (mango.flows.kernels.signed) against layer-by-layer autograd."""

from __future__ import annotations

import copy

import pytest
import torch

from mango.flows import FoldedNormAttention, InvertibleCrossAttention, MangoBlock
from mango.testing.flows import acting_flow, perturb


def _perturbed(module, seed=0):
    perturb(module, scale=0.3, seed=seed)
    return module


def _unfused(module):
    """A copy that runs every ICA layer on the dense autograd path (no folding, no kernels)."""
    reference = copy.deepcopy(module)
    for layer in reference.modules():
        if isinstance(layer, InvertibleCrossAttention):
            layer.fused = False
    return reference


def _outputs_and_grads(module, x):
    x = x.clone().requires_grad_()
    y, logdet = module(x)
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    ((y * weight).sum() + 0.7 * logdet.sum()).backward()
    return y.detach(), logdet.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("tokens", [(4, 4), (5, 3), (3, 4, 3)])
def test_folded_block_equals_layer_by_layer(tokens):
    """ActNorm -> signed ICA pairs folded into one node: same output, log-det and gradients."""
    torch.manual_seed(0)
    block = _perturbed(MangoBlock(3, tokens, coupling_hidden=8).double().eval())
    x = torch.randn(2, sum(tokens), 3, dtype=torch.float64)
    assert sum(isinstance(s, FoldedNormAttention) and s.applies(x) for s in block.steps) == 8 + (
        len(tokens) > 2
    )
    (y, ld, gx, gp), (y_r, ld_r, gx_r, gp_r) = (
        _outputs_and_grads(m, x) for m in (block, _unfused(block))
    )
    assert torch.allclose(y, y_r, atol=1e-12) and torch.allclose(ld, ld_r, atol=1e-12)
    assert torch.allclose(gx, gx_r, atol=1e-10)
    for a, b in zip(gp, gp_r, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_unfolded_while_actnorm_initialises_or_hooks_watch():
    block = MangoBlock(3, (4, 4), coupling_hidden=8).train()
    x = torch.randn(2, 8, 3)
    assert not block.steps[0].applies(x)  # data-dependent init first
    block(x)
    assert block.steps[0].applies(x)
    seen = []
    handle = block.layers[1].register_forward_hook(lambda *args: seen.append(1))
    block(torch.randn(2, 8, 3))
    handle.remove()
    assert seen == [1]


def test_flow_detached_density_gradients_equal_unfused():
    """The training step's one-pass detached NLL through folded blocks (float64)."""
    torch.manual_seed(0)
    flow = acting_flow(4, (5, 4), blocks=2, scale=0.3, coupling_hidden=8)
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    results = []
    for module in (flow, _unfused(flow)):
        xi = x.clone().requires_grad_()
        z, z_density, logdet = module.forward_detached_density(xi)
        (z.sin().sum() + (z_density.square().sum(-1).sum(-1) - logdet).sum()).backward()
        results.append((xi.grad, [p.grad for p in module.parameters()]))
    (gx, gp), (gx_r, gp_r) = results
    assert torch.allclose(gx, gx_r, atol=1e-10)
    for a, b in zip(gp, gp_r, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("l2,block", [(1, 4), (7, 3), (64, 64), (100, 32), (130, 1), (130, 200)])
def test_blocked_solve_equals_the_dense_solve(l2, block):
    """signed_solve against ``A = I + βN`` built whole and one triangular solve, in float64."""
    from mango.flows.kernels.signed import signed_mask, signed_probabilities
    from mango.flows.kernels.solve import signed_solve

    gen = torch.Generator().manual_seed(l2)
    q, k = (2 * torch.randn(3, l2, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    y2 = torch.randn(3, l2, 4, generator=gen, dtype=torch.float64)
    beta = torch.tensor(0.45, dtype=torch.float64)
    p = signed_probabilities(q, k, signed_mask(l2))
    a = torch.eye(l2, dtype=torch.float64) + beta * 0.5 * (p[0] - p[1])
    dense = torch.linalg.solve_triangular(a, y2, upper=True, unitriangular=True)
    blocked = signed_solve(q, k, y2, beta, block=block)
    assert torch.allclose(blocked, dense, atol=1e-12, rtol=0), (blocked - dense).abs().max()
    assert torch.allclose(a @ blocked, y2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("partition", ["mmca", "imca", "lica"])
def test_inverse_without_grad_equals_the_dense_inverse_with_grad(partition, monkeypatch):
    """The no-grad inverse (blocks of rows) and the autograd one (dense A) agree, past one block."""
    from mango.flows.kernels.solve import signed_solve

    monkeypatch.setattr(signed_solve, "__defaults__", (16,))
    layer = _perturbed(InvertibleCrossAttention(6, (40, 50), partition, 2)).double()
    x = torch.randn(2, 90, 6, dtype=torch.float64)
    y, _ = layer(x)
    with torch.no_grad():
        blocked, logdet = layer.inverse(y)
    dense, _ = layer.inverse(y)  # grad enabled: the dense matrix
    # LICA's perturbed token mixing is ill-conditioned: both paths land about 3e-11 from x
    assert torch.allclose(blocked, dense, atol=1e-10, rtol=0)
    assert torch.allclose(blocked, x, atol=1e-9, rtol=0) and torch.equal(logdet, torch.zeros(2))
