"""GPU checks of the flows (``make gpu-check``): skipped with a one-line reason without CUDA.

The fused CUDA kernel (``mango.flows.kernels.lse.CUDA_EFFICIENT``) against the dense softmax in
outputs, ``lse`` and every gradient, and every ICA form on CUDA against its dense path; a 12-block
round trip and memory-saving gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

from mango.flows import ATTENTION_FORMS, InvertibleCrossAttention
from mango.flows.kernels import lse as fused_module
from mango.flows.kernels.lse import CUDA_EFFICIENT, causal_attention, select_kernel
from mango.testing.flows import acting_flow, idle_layers

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def assert_near(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """``‖actual - expected‖ <= tolerance ‖expected‖``: float32 rounding, relative to the whole
    tensor (single entries of a gradient can be ill-conditioned on their own)."""
    error, scale = float((actual - expected).norm()), float(expected.norm())
    assert error <= tolerance * scale + 1e-6, (error, scale)


def test_float32_on_cuda_selects_the_fused_kernel():
    assert select_kernel("cuda", torch.float32) is CUDA_EFFICIENT
    assert fused_module.fused_available(torch.zeros(1, device="cuda"))


@pytest.mark.parametrize("length", [1, 31, 37, 64, 100, 257])
@pytest.mark.parametrize("key_dim,value_dim", [(64, 64), (6, 5), (9, 13)])
def test_fused_cuda_kernel_matches_the_dense_softmax(length, key_dim, value_dim):
    """``(P v, lse)`` and the gradients of q, k, v through both outputs, against float64."""
    torch.manual_seed(0)
    shape = (3, length)
    q, k = (torch.randn(*shape, key_dim, device="cuda") for _ in range(2))
    v = torch.randn(*shape, value_dim, device="cuda")
    w_out = torch.randn(*shape, value_dim, device="cuda")
    w_lse = torch.randn(*shape, device="cuda")
    results = []
    for dtype in (torch.float32, torch.float64):
        inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        if dtype == torch.float32:
            out, lse = causal_attention(*inputs)
            assert lse.shape == shape  # the kernel's padded lse is sliced
        else:
            s = inputs[0] @ inputs[1].mT
            mask = torch.ones(length, length, dtype=torch.bool, device="cuda").triu(1)
            s = s.masked_fill(mask, -math.inf)
            lse, out = torch.logsumexp(s, -1), torch.softmax(s, -1) @ inputs[2]
        loss = (out * w_out.to(dtype)).sum() + (lse * w_lse.to(dtype)).sum()
        results.append([out, lse, *torch.autograd.grad(loss, inputs)])
    for fused, dense in zip(*results, strict=True):
        torch.testing.assert_close(fused, dense.float(), rtol=1e-4, atol=1e-4)


def _pair(attention: str, tokens: tuple[int, int], partition: str):
    layers = []
    for fused in (True, False):
        torch.manual_seed(0)
        layer = InvertibleCrossAttention(
            48, tokens, partition, 1, attention=attention, fused=fused, key_dim=20
        ).cuda()
        with torch.no_grad():  # LICA's W kept well conditioned: float32 compares to 1e-4
            for name, p in layer.named_parameters():
                p.add_((0.02 if name.startswith("mixing") else 0.3) * torch.randn_like(p))
        layers.append(layer)
    if partition == "lica":
        layers[1].mixing.permutation.copy_(layers[0].mixing.permutation)
    return layers


@pytest.mark.parametrize("partition", ["mmca", "imca", "lica"])
@pytest.mark.parametrize("attention", ATTENTION_FORMS)
@pytest.mark.parametrize("tokens", [(64, 64), (100, 90)])
def test_ica_on_cuda_matches_its_dense_form(partition, attention, tokens, monkeypatch):
    """Outputs, log-dets and every gradient, float32. The signed form runs its one-node pass at
    64 tokens and SDPA beyond; the others run the fused kernel (counted here)."""
    calls = []
    real = fused_module._AttentionWithLSE.apply
    monkeypatch.setattr(
        fused_module._AttentionWithLSE, "apply", lambda *a: calls.append(a[-1]) or real(*a)
    )
    layers = _pair(attention, tokens, partition)
    x = torch.randn(4, sum(tokens), 48, device="cuda", requires_grad=True)
    outs, grads = [], []
    for layer in layers:
        y, logdet = layer(x)
        loss = (y * torch.linspace(-1, 1, 48, device="cuda")).sum() + logdet.sum()
        grads.append(torch.autograd.grad(loss, [x, *layer.parameters()]))
        outs.append((y.detach(), logdet.detach()))
    assert calls == ([] if attention == "signed" else [CUDA_EFFICIENT])
    for a, b in zip(outs[0], outs[1], strict=True):
        assert_near(a, b, 1e-5)
    for a, b in zip(*grads, strict=True):
        assert_near(a, b, 1e-4)


def test_twelve_block_round_trip_on_cuda():
    flow = acting_flow(64, (64, 64), blocks=12, scale=0.05, dtype=torch.float32, seed=3).cuda()
    x = torch.randn(8, 128, 64, device="cuda") * 2 + 1
    assert idle_layers(flow, x) == []
    with torch.no_grad():
        back = flow.inverse(flow(x)[0])[0]
    assert float((back - x).norm() / x.norm()) < 1e-5


@pytest.mark.parametrize("attention", ["signed", "gated"])
def test_memory_saving_gradients_match_on_cuda(attention):
    grads = []
    for saving in (False, True):
        flow = (
            acting_flow(
                32,
                (16, 80),
                4,
                scale=0.05,
                dtype=torch.float32,
                memory_saving=saving,
                attention=attention,
            )
            .cuda()
            .train()
        )
        x = torch.randn(4, 96, 32, device="cuda", requires_grad=True)
        z, logdet = flow(x)
        grads.append(
            torch.autograd.grad((z.square().sum() - logdet.sum()), [x, *flow.parameters()])
        )
    # one vector: some parameters' gradients are small on their own
    assert_near(*(torch.cat([g.flatten() for g in each]) for each in grads), 1e-3)
