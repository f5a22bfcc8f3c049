"""Memory-free invertible backpropagation gives the standard gradients."""

from __future__ import annotations

import pytest
import torch

from mango.flows import MangoFlow


@pytest.mark.parametrize("tokens", [(5, 5), (4, 6, 3)])
def test_memory_saving_gradients_equal_standard(tokens):
    torch.manual_seed(0)
    standard = MangoFlow(4, tokens, blocks=3, coupling_hidden=8).double().train()
    saving = MangoFlow(4, tokens, blocks=3, coupling_hidden=8, memory_saving=True).double().train()
    saving.load_state_dict(standard.state_dict())
    init = torch.randn(16, sum(tokens), 4, dtype=torch.float64) * 2 + 1
    standard(init)  # data-dependent ActNorm initialisation in both, from the same batch
    saving(init)
    assert torch.equal(
        standard.state_dict()["layers.0.layers.0.log_scale"],
        saving.state_dict()["layers.0.layers.0.log_scale"],
    )
    with torch.no_grad():
        for p, q in zip(standard.parameters(), saving.parameters(), strict=True):
            p.add_(0.1 * torch.randn_like(p))
            q.copy_(p)
    x = torch.randn(3, sum(tokens), 4, dtype=torch.float64)
    results = []
    for flow in (standard, saving):
        xi = x.clone().requires_grad_()
        loss = flow.bits_per_dim(xi).sum() + flow(xi)[0].pow(3).mean()
        loss.backward()
        results.append((loss.detach(), xi.grad, {n: p.grad for n, p in flow.named_parameters()}))
    (l1, gx1, gp1), (l2, gx2, gp2) = results
    assert torch.allclose(l1, l2, atol=1e-12)
    assert torch.allclose(gx1, gx2, atol=1e-6, rtol=0)
    for name, grad in gp1.items():
        assert grad is not None and gp2[name] is not None, name
        assert torch.allclose(grad, gp2[name], atol=1e-6, rtol=0), name


def test_memory_saving_stores_no_intermediate_activations():
    """The autograd graph of a memory-saving flow holds only its output, not every layer's."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8)
    counts = []
    for saving in (False, True):
        flow = MangoFlow(8, (8, 8), blocks=4, memory_saving=saving).eval()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t
        ):
            flow(x.requires_grad_())
        counts.append(sum(saved))
    assert counts[1] * 20 < counts[0], counts
