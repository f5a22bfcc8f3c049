"""Every route of ``mango.flows.kernels.select_route`` against the dense reference (float64).

Each fast path is compared with the class's ``dense_forward`` / ``dense_inverse`` on a layer whose
parameters are perturbed away from their (often identity) initial values: outputs, log-dets and
every gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mango.flows import (
    ActNorm,
    FoldedNormAttention,
    InvertibleCrossAttention,
    MangoBlock,
    MangoFlow,
    SignedCrossAttention,
    SoftmaxCrossAttention,
)
from mango.flows.kernels import DENSE_MAX_TOKENS, Route, select_route

LAYOUTS = [("mmca", 1, (9, 6)), ("imca", 3, (8, 8)), ("lica", 2, (5, 7))]


def _layer(attention: str, partition: str, variant: int, tokens: tuple[int, ...], **kwargs):
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(5, tokens, partition, variant, attention=attention, **kwargs)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _dense(layer: InvertibleCrossAttention) -> InvertibleCrossAttention:
    reference = copy.deepcopy(layer)
    reference.fused = False
    return reference


def _run(module, x: torch.Tensor):
    """Outputs, log-det and the gradients of a weighted loss w.r.t. ``x`` and every parameter."""
    x = x.clone().requires_grad_()
    y, logdet = module(x)
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    grads = torch.autograd.grad(
        (y * weight).sum() + 0.7 * logdet.sum(), [x, *module.parameters()], allow_unused=True
    )
    return [y, logdet, *grads]


def _assert_equal_runs(fast, dense) -> None:
    for a, b in zip(fast, dense, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("partition,variant,tokens", LAYOUTS)
@pytest.mark.parametrize(
    "route,attention",
    [
        (Route.SIGNED_ONE_NODE, "signed"),
        (Route.SIGNED_CAUSAL, "signed"),
        *[(Route.LSE_ATTENTION, form) for form in ("gated", "softmax", "half", "identity_plus")],
    ],
)
def test_forward_route_equals_dense(route, attention, partition, variant, tokens, monkeypatch):
    if route is Route.SIGNED_CAUSAL:
        monkeypatch.setattr("mango.flows.kernels.DENSE_MAX_TOKENS", 0)
    layer = _layer(attention, partition, variant, tokens, key_dim=3)
    dense = _dense(layer)
    x = torch.randn(3, sum(tokens), 5, dtype=torch.float64)
    assert layer.route("forward", x) is route and dense.route("forward", x) is Route.DENSE
    _assert_equal_runs(_run(layer, x), _run(dense, x))


@pytest.mark.parametrize("partition,variant,tokens", [*LAYOUTS, ("mmca", 2, (30, 21))])
@pytest.mark.parametrize("attention", ["signed", "gated", "softmax", "half", "identity_plus"])
def test_inverse_without_autograd_equals_dense(attention, partition, variant, tokens, monkeypatch):
    """``BLOCKWISE_SOLVE`` (over several blocks of rows) and ``IN_PLACE_MATRIX``."""
    from mango.flows.kernels.solve import signed_solve

    monkeypatch.setattr(signed_solve, "__defaults__", (4,))
    layer = _layer(attention, partition, variant, tokens)
    y = torch.randn(2, sum(tokens), 5, dtype=torch.float64)
    with torch.no_grad():
        assert layer.route("inverse", y) is (
            Route.BLOCKWISE_SOLVE if attention == "signed" else Route.IN_PLACE_MATRIX
        )
        fast, logdet_fast = layer.inverse(y)
    assert layer.route("inverse", y) is Route.DENSE
    dense, logdet_dense = layer.inverse(y)
    # the "softmax" form's A = P is ill-conditioned: its X2 is large, so compare relatively
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet_fast, logdet_dense, rtol=0, atol=1e-10)


@pytest.mark.parametrize("partition,variant,tokens", LAYOUTS)
def test_folded_norm_attention_equals_the_two_dense_layers(partition, variant, tokens):
    norm = ActNorm(5).double().eval()
    with torch.no_grad():
        norm.log_scale.normal_(0, 0.3)
        norm.bias.normal_(0, 0.3)
    layer = _layer("signed", partition, variant, tokens)
    pair = FoldedNormAttention(norm, layer)
    x = torch.randn(3, sum(tokens), 5, dtype=torch.float64)
    assert pair.applies(x)
    dense_norm, dense = copy.deepcopy(norm), _dense(layer)
    params = [*norm.parameters(), *layer.parameters()]
    dense_params = [*dense_norm.parameters(), *dense.parameters()]
    results = []
    for run, parameters in ((pair, params), (lambda x: dense(dense_norm(x)[0])[0], dense_params)):
        xi = x.clone().requires_grad_()
        y = run(xi)
        weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        results.append([y, *torch.autograd.grad((y * weight).sum(), [xi, *parameters])])
    _assert_equal_runs(*results)


@pytest.mark.parametrize(
    "direction,signed,fused,tokens,grad,expected",
    [
        ("forward", True, True, DENSE_MAX_TOKENS, True, Route.SIGNED_ONE_NODE),
        ("forward", True, True, DENSE_MAX_TOKENS + 1, True, Route.SIGNED_CAUSAL),
        ("forward", True, False, 8, True, Route.DENSE),
        ("forward", False, True, 8, True, Route.LSE_ATTENTION),
        ("forward", False, False, 8, True, Route.DENSE),
        ("inverse", True, True, 8, False, Route.BLOCKWISE_SOLVE),
        ("inverse", False, True, 8, False, Route.IN_PLACE_MATRIX),
        ("inverse", True, True, 8, True, Route.DENSE),
        ("inverse", False, False, 8, True, Route.DENSE),
    ],
)
def test_routing_table(direction, signed, fused, tokens, grad, expected):
    with torch.set_grad_enabled(grad):
        route = select_route(direction, signed=signed, fused=fused, tokens=tokens, x=torch.zeros(1))
    assert route is expected


def test_lse_route_needs_a_kernel_for_the_device_and_dtype():
    x = torch.zeros(1, dtype=torch.bfloat16)
    assert select_route("forward", signed=False, fused=True, tokens=8, x=x) is Route.DENSE


def test_the_factory_builds_one_class_per_formula():
    for form, cls in [("signed", SignedCrossAttention), ("half", SoftmaxCrossAttention)]:
        layer = InvertibleCrossAttention(4, (3, 3), "mmca", 1, form)
        assert type(layer) is cls and isinstance(layer, InvertibleCrossAttention)
        assert type(copy.deepcopy(layer)) is cls
    with pytest.raises(ValueError, match="attention must be one of"):
        InvertibleCrossAttention(4, (3, 3), "mmca", 1, attention="nope")
    with pytest.raises(ValueError, match="has no attention form"):
        SignedCrossAttention(4, (3, 3), "mmca", 1, attention="half")


def test_block_folds_its_actnorm_signed_pairs_when_built():
    block = MangoBlock(4, (3, 3), coupling_hidden=8)
    folded = [s for s in block.steps if isinstance(s, FoldedNormAttention)]
    assert len(folded) == 8 and [layer for s in folded for layer in s.layers] == list(block)[:-1]
    gated = MangoBlock(4, (3, 3), attention="gated", coupling_hidden=8)
    assert list(gated.steps) == list(gated)
    assert list(block.state_dict()) == list(copy.deepcopy(block).state_dict())


def test_actnorm_needs_initialization_only_in_training_before_the_first_batch():
    norm = ActNorm(3)
    assert norm.needs_initialization and not norm.eval().needs_initialization
    norm.train()(torch.randn(2, 4, 3))
    assert not norm.needs_initialization


def test_health_paused_is_declared_and_restored():
    flow = MangoFlow(4, (3, 3), blocks=1)  # structural: a flag, no values
    assert flow.health_monitored
    with flow.health_paused():
        assert not flow.health_monitored
        with flow.health_paused():
            assert not flow.health_monitored
        assert not flow.health_monitored
    assert flow.health_monitored
