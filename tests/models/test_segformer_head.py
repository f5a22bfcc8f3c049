"""SegFormer all-MLP decoder: shapes, gradients, and a hand-computed output."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.models.encoders.mit import MiTEncoder
from mango.models.heads.segformer import SegFormerHead


@settings(max_examples=10, deadline=None)
@given(
    batch=st.integers(1, 3),
    size=st.integers(2, 12),
    stages=st.integers(1, 4),
    classes=st.integers(1, 5),
)
def test_logits_at_the_finest_resolution(batch: int, size: int, stages: int, classes: int) -> None:
    channels = [4 * (i + 1) for i in range(stages)]
    head = SegFormerHead(channels, embed_dim=6, num_classes=classes)
    features = [
        torch.randn(batch, c, max(size >> i, 1), max(size >> i, 1)) for i, c in enumerate(channels)
    ]
    assert head(features).shape == (batch, classes, size, size)


def test_on_a_mit_encoder() -> None:
    encoder = MiTEncoder("tiny")
    head = SegFormerHead(encoder.out_channels, embed_dim=16, num_classes=5)
    assert head(encoder(torch.randn(2, 3, 64, 96))).shape == (2, 5, 16, 24)


def test_gradients_reach_every_parameter() -> None:
    head = SegFormerHead([8, 16, 32, 32], embed_dim=8, num_classes=3).train()
    features = [torch.randn(2, c, 16 >> i, 16 >> i) for i, c in enumerate([8, 16, 32, 32])]
    head(features).square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_constant_features_give_the_hand_computed_logit() -> None:
    """Constant maps stay constant through projection and bilinear upsampling, so each stage
    contributes one number: logit = w_c * ReLU((f_0 e_0 + f_1 e_1) / sqrt(1 + eps)) + b_c."""
    head = SegFormerHead([1, 2], embed_dim=1, num_classes=1).eval()
    with torch.no_grad():
        head.projections[0].weight.fill_(2.0)  # e_0 = 2 * 1.5 + 0.5 = 3.5
        head.projections[0].bias.fill_(0.5)
        head.projections[1].weight.copy_(torch.tensor([[1.0, -1.0]]))  # e_1 = 3 - 1 - 1 = 1
        head.projections[1].bias.fill_(-1.0)
        # concatenation is coarsest first: channel 0 is stage 1, channel 1 is stage 0
        head.fuse.weight.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))  # 1 + 7 = 8
        head.classifier.weight.fill_(0.25)
        head.classifier.bias.fill_(1.0)
    coarse = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 4, 3)
    features = [torch.full((1, 1, 8, 6), 1.5), coarse]
    expected = 0.25 * 8.0 / math.sqrt(1.0 + head.norm.eps) + 1.0
    torch.testing.assert_close(head(features), torch.full((1, 1, 8, 6), expected))


def test_wrong_channels_are_rejected() -> None:
    head = SegFormerHead([8, 16], embed_dim=4, num_classes=2)
    with pytest.raises(ValueError, match=r"\[8, 16\], got \[8, 32\]"):
        head([torch.zeros(1, 8, 4, 4), torch.zeros(1, 32, 2, 2)])
