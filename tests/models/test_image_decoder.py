"""ImageDecoder head and PatchGAN discriminator: shapes, ranges, gradients, receptive field."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mango.models.discriminator import PatchGANDiscriminator
from mango.models.heads.image_decoder import ImageDecoder


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 24),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    steps=st.integers(0, 3),
    width=st.sampled_from([2, 4, 12, 32]),
    out=st.sampled_from([1, 3]),
)
def test_decoder_shapes_and_range(
    batch: int, channels: int, h: int, w: int, steps: int, width: int, out: int
) -> None:
    head = ImageDecoder(channels, out, upsample_steps=steps, width=width)
    y = head(torch.randn(batch, channels, h, w) * 10)
    assert y.shape == (batch, out, h * 2**steps, w * 2**steps)
    assert y.abs().max() <= 1.0


def test_decoder_gradients_reach_every_parameter() -> None:
    head = ImageDecoder(16, upsample_steps=2, width=16)
    head(torch.randn(2, 16, 3, 3)).square().mean().backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_decoder_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="upsample_steps"):
        ImageDecoder(8, upsample_steps=-1)


@pytest.mark.parametrize(("size", "n_layers", "out"), [(256, 3, 30), (64, 3, 6), (64, 2, 14)])
def test_patchgan_output_size(size: int, n_layers: int, out: int) -> None:
    net = PatchGANDiscriminator(6, ndf=4, n_layers=n_layers)
    assert net(torch.randn(2, 6, size, size)).shape == (2, 1, out, out)


def test_patchgan_receptive_field_is_70_pixels() -> None:
    net = PatchGANDiscriminator(3, ndf=4).eval()
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    logits = net(x)
    assert logits.shape == (1, 1, 14, 14)
    logits[0, 0, 7, 7].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70
