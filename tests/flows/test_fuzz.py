"""Fuzzing the flow with random shapes, dtypes and extreme values: a correct result or a ValueError."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.testing.flows import acting_flow

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]


@settings(max_examples=40, deadline=None)
@given(
    tokens=st.lists(st.integers(2, 5), min_size=2, max_size=3),
    dim=st.integers(2, 4),
    batch=st.integers(1, 2),
    length_offset=st.sampled_from([0, 0, 0, -1, 1]),
    dim_offset=st.sampled_from([0, 0, 0, 1]),
    dtype=st.sampled_from(DTYPES),
    scale=st.sampled_from([0.0, 1e-30, 1.0, 1e4, 1e30, math.inf, math.nan]),
)
def test_flow_gives_a_correct_result_or_a_value_error(
    tokens, dim, batch, length_offset, dim_offset, dtype, scale
):
    flow = acting_flow(dim, tuple(tokens), 1, scale=0.1, dtype=torch.float32, coupling_hidden=8)
    shape = (batch, sum(tokens) + length_offset, dim + dim_offset)
    x = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)
    try:
        with torch.no_grad():
            z, logdet = flow(x)
    except ValueError as error:
        message = str(error)
        assert "\n" not in message and message, message
        expect_error = (
            length_offset != 0
            or dim_offset != 0
            or not x.is_floating_point()
            or x.dtype == torch.float64  # a float32 flow refuses float64 tokens
            or not bool(torch.isfinite(x).all())
            or scale >= 1e30
        )
        assert expect_error, f"unexpected ValueError: {message}"
        return
    assert length_offset == 0 and dim_offset == 0 and x.is_floating_point()
    assert z.dtype == torch.float32  # float16 / bfloat16 tokens are computed in float32
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all()
    with torch.no_grad():
        back = flow.inverse(z)[0]
    reference = x.to(z.dtype)
    # float32 rounding happens at the scale of the larger of the input and the latent
    assert (back - reference).norm() <= 1e-4 * max(reference.norm(), z.norm())
