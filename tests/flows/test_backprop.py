"""Memory-free invertible backpropagation gives the standard gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mango.testing.flows import acting_flow


@pytest.mark.parametrize("tokens", [(5, 5), (4, 6, 3)])
def test_memory_saving_gradients_equal_standard(tokens):
    standard = acting_flow(4, tokens, 3, scale=0.1, coupling_hidden=8).train()
    saving = acting_flow(4, tokens, 3, scale=0.1, coupling_hidden=8, memory_saving=True).train()
    for (name, p), q in zip(
        standard.state_dict().items(), saving.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    x = torch.randn(3, sum(tokens), 4, dtype=torch.float64)
    results = []
    for flow in (standard, saving):
        xi = x.clone().requires_grad_()
        loss = flow.bits_per_dim(xi).sum() + flow(xi)[0].pow(3).mean()
        loss.backward()
        results.append((loss.detach(), xi.grad, {n: p.grad for n, p in flow.named_parameters()}))
    (l1, gx1, gp1), (l2, gx2, gp2) = results
    assert torch.allclose(l1, l2, atol=1e-12)
    # measured gap 3e-15; the smallest parameter's whole gradient is about 2e-7
    assert torch.allclose(gx1, gx2, atol=1e-11, rtol=0)
    for name, grad in gp1.items():
        assert grad is not None and gp2[name] is not None, name
        assert grad.abs().max() > 1e-9, name  # the comparison below can tell
        assert torch.allclose(grad, gp2[name], atol=1e-11, rtol=0), name


def test_memory_saving_stores_no_intermediate_activations():
    """The autograd graph of a memory-saving flow holds only its output, not every layer's."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8)
    counts = []
    for saving in (False, True):
        flow = acting_flow(8, (8, 8), blocks=4, dtype=torch.float32, memory_saving=saving)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t
        ):
            flow(x.requires_grad_())
        counts.append(sum(saved))
    assert counts[1] * 20 < counts[0], counts


@pytest.mark.parametrize("memory_saving", [False, True])
def test_detached_density_pass_equals_two_passes(memory_saving):
    """One pass with split gradients == task loss on flow(x) + NLL on flow(x.detach())."""
    flow = acting_flow(4, (5, 4), 2, scale=0.1, coupling_hidden=8, memory_saving=memory_saving)
    flow = flow.train()
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    target = torch.randn(3, 9, 4, dtype=torch.float64)

    def loss_and_grads(one_pass: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        flow.zero_grad()
        xi = (x * 1.0).requires_grad_()
        encoded = xi.tanh()  # a stand-in encoder between the leaf and the flow
        if one_pass:
            z, z_density, logdet = flow.forward_detached_density(encoded)
            nll = flow.to_bits_per_dim(flow.latent_log_prob(z_density, logdet))
        else:
            z = flow(encoded)[0]
            nll = flow.bits_per_dim(encoded.detach())
        loss = (z - target).pow(2).mean() + nll.mean()
        loss.backward()
        return loss.detach(), xi.grad, [p.grad.clone() for p in flow.parameters()]

    (l1, gx1, gp1), (l2, gx2, gp2) = loss_and_grads(True), loss_and_grads(False)
    assert torch.allclose(l1, l2, atol=1e-12)
    assert torch.allclose(gx1, gx2, atol=1e-11, rtol=0)
    for a, b in zip(gp1, gp2, strict=True):
        assert torch.allclose(a, b, atol=1e-11, rtol=0)
    # The NLL really does reach the parameters and really is kept out of x:
    flow.zero_grad()
    xi = x.clone().requires_grad_()
    _, z_density, logdet = flow.forward_detached_density(xi)
    flow.to_bits_per_dim(flow.latent_log_prob(z_density, logdet)).sum().backward()
    assert xi.grad is None or not xi.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in flow.parameters())
