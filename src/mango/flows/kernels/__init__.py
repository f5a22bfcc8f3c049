"""Fast paths of the invertible cross-attention, and the one table that routes to them.

Each ICA class (:class:`~mango.flows.signed_attention.SignedCrossAttention`,
:class:`~mango.flows.softmax_attention.SoftmaxCrossAttention`) has a dense reference
``dense_forward`` / ``dense_inverse`` that reads like the paper. The kernels here compute the
same numbers faster; :func:`select_route` alone decides which one runs:

=========  ===============  ==========================================  ===================
direction  form             when                                        route
=========  ===============  ==========================================  ===================
forward    signed           ``fused``, ``L2 <= DENSE_MAX_TOKENS``       ``SIGNED_ONE_NODE``
forward    signed           ``fused``, longer                           ``SIGNED_CAUSAL``
forward    ``c0 I + c1 P``  ``fused``, an lse kernel for device, dtype  ``LSE_ATTENTION``
inverse    signed           autograd off                                ``BLOCKWISE_SOLVE``
inverse    ``c0 I + c1 P``  autograd off                                ``IN_PLACE_MATRIX``
either     any              otherwise                                   ``DENSE``
=========  ===============  ==========================================  ===================

``SIGNED_ONE_NODE`` is :func:`~mango.flows.kernels.signed.signed_layer`, which a
:class:`~mango.flows.folded.FoldedNormAttention` also runs with the ActNorm before the layer;
``SIGNED_CAUSAL`` :func:`~mango.flows.kernels.signed.signed_causal_attention`;
``LSE_ATTENTION`` :func:`~mango.flows.kernels.lse.coefficient_attention`; ``BLOCKWISE_SOLVE``
:func:`~mango.flows.kernels.solve.signed_solve`; ``IN_PLACE_MATRIX``
:func:`~mango.flows.kernels.solve.coefficient_matrix_in_place`. Every route is tested equal to
the dense reference in float64 with non-identity parameters (``tests/flows/test_kernels.py``).
Why these thresholds: docs/flows.md, "Speed and memory".

Example:
    >>> x = torch.zeros(2, 10, 4)
    >>> select_route("forward", signed=True, fused=True, tokens=5, x=x)
    <Route.SIGNED_ONE_NODE: 'signed-one-node'>
    >>> select_route("forward", signed=False, fused=False, tokens=5, x=x)
    <Route.DENSE: 'dense'>
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

import torch
from torch import Tensor

from mango.flows.kernels.lse import fused_available

#: Longest ``X2`` (tokens) run by the one-node signed pass; longer ones use ``SIGNED_CAUSAL``.
DENSE_MAX_TOKENS = 64


class Route(str, Enum):
    """How one ICA call is computed (see the table above)."""

    DENSE = "dense"
    SIGNED_ONE_NODE = "signed-one-node"
    SIGNED_CAUSAL = "signed-causal"
    LSE_ATTENTION = "lse-attention"
    BLOCKWISE_SOLVE = "blockwise-solve"
    IN_PLACE_MATRIX = "in-place-matrix"


def select_route(
    direction: Literal["forward", "inverse"], *, signed: bool, fused: bool, tokens: int, x: Tensor
) -> Route:
    """The route of one ICA call: ``signed`` form or not, the layer's ``fused`` switch, ``tokens``
    = ``L2`` and the input ``x`` (its device and dtype choose the lse kernel)."""
    if direction == "inverse":
        if torch.is_grad_enabled():
            return Route.DENSE
        return Route.BLOCKWISE_SOLVE if signed else Route.IN_PLACE_MATRIX
    if not fused:
        return Route.DENSE
    if signed:
        return Route.SIGNED_ONE_NODE if tokens <= DENSE_MAX_TOKENS else Route.SIGNED_CAUSAL
    return Route.LSE_ATTENTION if fused_available(x) else Route.DENSE
