"""Token partitions of the ICA layer: which tokens condition (X1) and which are transformed (X2).

A flow is built for ``tokens = (L_1, ..., L_M)``: the input concatenates the M modalities' tokens
in that order. A partition is a pair of disjoint index sets ``(idx1, idx2)`` covering all tokens;
``split`` gathers them and ``merge`` (the inverse of ``split``) scatters them back.

Rules for two modalities ``a``, ``b`` (docs/design.md; even/odd = token 0::2 / 1::2 inside a
modality) and their generalisation to ``M >= 2`` modalities:

* **MMCA** (modality-to-modality), ``M`` variants. Variant ``v`` transforms modality
  ``v mod M`` (0-based) and conditions on all the others. For ``M = 2``: v1 = (X1 a, X2 b),
  v2 = (X1 b, X2 a), exactly the paper's table.
* **IMCA** (inter-modality, interleaved), 4 variants for any ``M``. With ``(p, q)`` the two bits
  of ``v - 1`` (``p`` the high bit), modality ``m`` puts its tokens of parity ``p`` (``m`` even)
  or ``q`` (``m`` odd) in X1 and the other parity in X2. For ``M = 2`` this is the paper's table:
  v1 = a_even + b_even, v2 = a_even + b_odd, v3 = a_odd + b_even, v4 = a_odd + b_odd in X1.
* **LICA** (learnable), 2 variants: after a learned token mixing (see
  :class:`~mango.flows.token_mixing.LUTokenMixing`), X1 = the first ``L // 2`` mixed tokens and
  X2 = the rest (v1), or the roles swapped (v2). It needs no modality structure.
"""

from __future__ import annotations

import torch
from torch import Tensor

PARTITIONS = ("mmca", "imca", "lica")


def num_variants(partition: str, modalities: int) -> int:
    """How many variants ``partition`` has for ``modalities`` modalities."""
    if partition == "mmca":
        return modalities
    if partition == "imca":
        return 4
    if partition == "lica":
        return 2
    raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")


def validate_tokens(tokens: tuple[int, ...]) -> tuple[int, ...]:
    """Check a token layout: at least two modalities, each with at least two tokens."""
    tokens = tuple(int(t) for t in tokens)
    if len(tokens) < 2:
        raise ValueError(f"tokens must list at least 2 modalities' token counts, got {tokens}")
    if any(t < 2 for t in tokens):
        raise ValueError(f"every modality needs at least 2 tokens, got {tokens}")
    return tokens


def partition_indices(
    tokens: tuple[int, ...], partition: str, variant: int
) -> tuple[Tensor, Tensor]:
    """Return ``(idx1, idx2)``: positions of X1 (conditioning) and X2 (transformed) tokens.

    For LICA the positions refer to the token-mixed sequence.

    Example:
        >>> idx1, idx2 = partition_indices((4, 4), "imca", 2)
        >>> idx1.tolist(), idx2.tolist()   # a_even + b_odd | a_odd + b_even
        ([0, 2, 5, 7], [1, 3, 4, 6])
    """
    tokens = validate_tokens(tokens)
    count = num_variants(partition, len(tokens))
    if not 1 <= variant <= count:
        raise ValueError(
            f"{partition} has variants 1..{count} for {len(tokens)} modalities, got {variant}"
        )
    starts = [sum(tokens[:m]) for m in range(len(tokens))]
    total = sum(tokens)
    if partition == "mmca":
        target = variant % len(tokens)
        in_x2 = torch.zeros(total, dtype=torch.bool)
        in_x2[starts[target] : starts[target] + tokens[target]] = True
    elif partition == "imca":
        high, low = (variant - 1) >> 1, (variant - 1) & 1
        in_x2 = torch.zeros(total, dtype=torch.bool)
        for m, (start, count_m) in enumerate(zip(starts, tokens, strict=True)):
            x1_parity = high if m % 2 == 0 else low
            local = torch.arange(count_m)
            in_x2[start : start + count_m] = (local % 2) != x1_parity
    else:
        in_x2 = torch.arange(total) >= total // 2
        if variant == 2:
            in_x2 = ~in_x2
    positions = torch.arange(total)
    return positions[~in_x2], positions[in_x2]
