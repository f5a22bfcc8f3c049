"""FlowFusion: the NLL is kept out of the encoders in eager and in compiled training."""

from __future__ import annotations

import torch

from mango.models.fusion import FlowFusion
from mango.testing.flows import perturb


def _fusion() -> tuple[FlowFusion, list[torch.Tensor]]:
    torch.manual_seed(0)
    fusion = FlowFusion(8, (6, 4), blocks=1, coupling_hidden=8).train()  # perturbed below
    tokens = [torch.randn(2, 6, 8, requires_grad=True), torch.randn(2, 4, 8, requires_grad=True)]
    fusion(tokens)  # ActNorm initialisation
    perturb(fusion, scale=0.1)  # every layer acts
    return fusion, tokens


def test_nll_gradient_reaches_the_flow_but_not_the_tokens():
    fusion, tokens = _fusion()
    fusion(tokens).bits_per_dim.sum().backward()
    assert all(t.grad is None or not t.grad.any() for t in tokens)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())
    fusion.zero_grad()
    fusion(tokens).tokens[0].sum().backward()  # the task path does reach the tokens
    assert tokens[0].grad is not None and tokens[0].grad.abs().sum() > 0


def test_training_forward_traces_into_one_compiled_graph():
    fusion, tokens = _fusion()
    explanation = torch._dynamo.explain(fusion)(tokens)
    assert explanation.graph_break_count == 0, explanation.break_reasons
