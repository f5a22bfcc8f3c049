"""The lse kernel dispatch of ``mango.flows.kernels.lse``, and the CUDA kernel's plumbing on the CPU.

The CUDA kernel itself only runs on a GPU (``tests/gpu``). Here: which kernel each device and
dtype gets, the fallback to the dense path, the CUDA calls against this PyTorch's operator
schemas (the meta device runs their shape functions), and the shared log-sum-exp backward with a
kernel that follows the CUDA conventions (padded ``lse``, extra state) built from CPU operators.
"""

from __future__ import annotations

import math

import pytest
import torch

from mango.flows import InvertibleCrossAttention
from mango.flows.kernels import lse as fused_module
from mango.flows.kernels.lse import (
    CPU_FLASH,
    CUDA_EFFICIENT,
    FusedKernel,
    _AttentionWithLSE,
    fused_available,
    select_kernel,
)


@pytest.mark.parametrize(
    "device,dtype,expected",
    [
        ("cpu", torch.float32, CPU_FLASH),
        ("cpu", torch.float64, CPU_FLASH),
        ("cpu", torch.bfloat16, None),
        ("cuda", torch.float32, CUDA_EFFICIENT),
        ("cuda", torch.bfloat16, None),  # flash/cuDNN are fp16/bf16 kernels: not the flow's math
        ("cuda", torch.float16, None),
        ("cuda", torch.float64, None),  # no fused float64 kernel on CUDA
        ("meta", torch.float32, None),
    ],
)
def test_each_device_and_dtype_gets_its_kernel(device, dtype, expected):
    assert select_kernel(device, dtype) is expected


def test_a_kernel_missing_from_the_build_or_switched_off_is_skipped():
    missing = FusedKernel(
        "missing", "cpu", (torch.float32,), ("no_such_operator",), 1, CPU_FLASH.forward,
        CPU_FLASH.backward,
    )  # fmt: skip
    assert select_kernel("cpu", torch.float32, (missing, CPU_FLASH)) is CPU_FLASH
    assert select_kernel("cpu", torch.float32, (missing,)) is None
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    try:
        assert select_kernel("cuda", torch.float32) is None
    finally:
        torch.backends.cuda.enable_mem_efficient_sdp(True)
    assert select_kernel("cuda", torch.float32) is CUDA_EFFICIENT


def test_fused_available_follows_the_tensor():
    assert fused_available(torch.zeros(1))
    assert not fused_available(torch.zeros(1, dtype=torch.bfloat16))
    assert not fused_available(torch.zeros(1, device="meta"))


def test_without_a_kernel_the_layer_runs_the_dense_path(monkeypatch):
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(4, (6, 5), "mmca", 1, attention="gated", fused=True)
    dense = InvertibleCrossAttention(4, (6, 5), "mmca", 1, attention="gated", fused=False)
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(2, 11, 4)
    called = []
    real = fused_module._AttentionWithLSE.apply
    monkeypatch.setattr(
        fused_module._AttentionWithLSE, "apply", lambda *a: called.append(1) or real(*a)
    )
    layer(x)
    assert called, "the fused kernel should run on CPU float32"
    called.clear()
    monkeypatch.setattr(fused_module, "KERNELS", ())
    y, logdet = layer(x)
    assert not called
    y_dense, logdet_dense = dense(x)
    assert torch.equal(y, y_dense) and torch.equal(logdet, logdet_dense)
    with pytest.raises(ValueError, match="no fused attention kernel"):
        fused_module.causal_attention(x, x, x)


def test_cuda_calls_match_the_operator_schemas():
    """The argument order the CUDA kernel relies on, read from this PyTorch's schemas."""
    forward = torch.ops.aten._scaled_dot_product_efficient_attention.default._schema
    backward = torch.ops.aten._scaled_dot_product_efficient_attention_backward.default._schema
    assert [a.name for a in forward.arguments] == [
        "query", "key", "value", "attn_bias", "compute_log_sumexp", "dropout_p", "is_causal",
        "scale",
    ]  # fmt: skip
    assert [r.name for r in forward.returns] == [
        "output", "log_sumexp", "philox_seed", "philox_offset"
    ]  # fmt: skip
    assert [a.name for a in backward.arguments] == [
        "grad_out_", "query", "key", "value", "attn_bias", "out", "logsumexp", "philox_seed",
        "philox_offset", "dropout_p", "grad_input_mask", "is_causal", "scale",
    ]  # fmt: skip
    assert len(backward.returns) == 4


def test_cuda_kernel_runs_its_shape_functions_on_the_meta_device():
    """Forward and backward of the CUDA kernel through the meta kernels: padded ``lse``
    (``ceil(L/32)·32`` columns) is sliced for use, and every gradient has its input's shape."""
    q = torch.empty(3, 1, 37, 6, device="meta", requires_grad=True)
    k = torch.empty(3, 1, 37, 6, device="meta", requires_grad=True)
    v = torch.empty(3, 1, 37, 5, device="meta", requires_grad=True)
    out, lse = _AttentionWithLSE.apply(q, k, v, 1.0, CUDA_EFFICIENT)
    assert out.shape == (3, 1, 37, 5) and lse.shape == (3, 1, 37)
    grads = torch.autograd.grad(out.sum() + lse.sum(), [q, k, v])
    assert [g.shape for g in grads] == [q.shape, k.shape, v.shape]


def _cuda_like_kernel(seen: list) -> FusedKernel:
    """The CPU flash kernel dressed as the CUDA one: ``lse`` padded to a multiple of 32 columns
    (NaN in the padding: using it would show), one state tensor, head dims aligned to 4."""

    def forward(q, k, v, scale):
        out, lse, _ = CPU_FLASH.forward(q, k, v, scale)
        columns = math.ceil(lse.shape[-1] / 32) * 32
        padded = torch.nn.functional.pad(lse, (0, columns - lse.shape[-1]), value=math.nan)
        return out, padded, (torch.tensor(7),)

    def backward(grad, q, k, v, out, lse, state, scale):
        seen.append((lse.shape[-1], int(state[0]), q.shape[-1], v.shape[-1]))
        lse = lse[..., : q.shape[-2]]
        return CPU_FLASH.backward(grad, q, k, v, out, lse, (), scale)

    return FusedKernel("cuda-like", "cpu", (torch.float64,), CPU_FLASH.ops, 4, forward, backward)


def test_lse_backward_is_exact_with_a_padded_lse_kernel():
    """Outputs, ``lse`` and the gradients of q, k, v (through both outputs) equal the dense
    softmax in float64, for a kernel with the CUDA conventions."""
    torch.manual_seed(0)
    seen: list = []
    q, k = (torch.randn(2, 1, 37, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 1, 37, 5, dtype=torch.float64, requires_grad=True)
    w_out = torch.randn(2, 1, 37, 5, dtype=torch.float64)
    w_lse = torch.randn(2, 1, 37, dtype=torch.float64)
    results = []
    for fused in (True, False):
        if fused:
            out, lse = _AttentionWithLSE.apply(q, k, v, 0.7, _cuda_like_kernel(seen))
        else:
            s = 0.7 * q @ k.mT
            s = s.masked_fill(torch.ones(37, 37, dtype=torch.bool).triu(1), -math.inf)
            lse = torch.logsumexp(s, -1)
            out = torch.softmax(s, -1) @ v
        grads = torch.autograd.grad((out * w_out).sum() + (lse * w_lse).sum(), [q, k, v])
        results.append((out, lse, *grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the backward got the whole padded lse and the state; 5 + 1 channels padded to 8
    assert seen == [(64, 7, 8, 8)]
