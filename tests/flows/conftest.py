"""Shared checks that every flow layer goes through (float64, perturbed away from initialisation)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from mango.flows import FlowLayer
from mango.testing.flows import perturb


def jacobian_logdet(layer: FlowLayer, x: Tensor) -> Tensor:
    """log|det J| per sample from the dense autograd Jacobian and slogdet (float64 reference)."""
    out = []
    for b in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda xb: layer(xb[None])[0][0], x[b], vectorize=True
        )
        n = x[b].numel()
        sign, logabs = torch.linalg.slogdet(jac.reshape(n, n))
        assert sign != 0, "Jacobian is singular"
        out.append(logabs)
    return torch.stack(out)


def check_layer(layer: FlowLayer, x: Tensor, logdet_tol: float = 1e-8) -> None:
    """Round trip, exact log-det, inverse log-det, gradients to every parameter, save/load."""
    layer = layer.double()
    x = x.double()
    y, logdet = layer(x)
    assert y.shape == x.shape and logdet.shape == (x.shape[0],)
    assert not torch.allclose(y, x), "layer is the identity: the test would prove nothing"
    reference = jacobian_logdet(layer, x)
    assert torch.allclose(logdet, reference, atol=logdet_tol, rtol=0), (logdet, reference)
    x_back, logdet_inv = layer.inverse(y)
    assert (x_back - x).norm() / x.norm() < 1e-10
    assert torch.allclose(logdet_inv, -logdet, atol=1e-10, rtol=0)
    (y.square().sum() + logdet.sum()).backward()
    no_grad = [n for n, p in layer.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    layer.load_state_dict(state)
    y2, logdet2 = layer(x)
    assert torch.equal(y2, y) and torch.equal(logdet2, logdet)


@pytest.fixture
def layer_check() -> Callable[[FlowLayer, Tensor], None]:
    return check_layer


@pytest.fixture
def perturbed() -> Callable[..., None]:
    return perturb
