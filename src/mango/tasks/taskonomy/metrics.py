"""Image translation metrics: MAE, MSE, PSNR, SSIM and FID / KID.

Predictions and targets are ``(B, 3, H, W)`` images in [-1, 1] (the generator's tanh range).
What :meth:`TranslationMetrics.compute` reports, exactly:

- ``mae`` = 10 · mean |p - t| and ``mse`` = 10 · mean (p - t)² over every pixel and channel of
  every image, **on the [-1, 1] scale** (the peers' ``L1Loss`` / ``MSELoss`` on their tensors),
  multiplied by 10 because the paper tables print them in units of 10⁻¹; ``rmse`` =
  10 · sqrt(mean (p - t)²) is the quantity the TokenFusion / CEN code actually logs as "l2".
- ``psnr`` (dB) and ``ssim``: images mapped to [0, 1] by ``(x + 1) / 2`` (clamped), computed per
  image with torchmetrics (``data_range = 1``; SSIM with an 11 x 11 Gaussian window, σ = 1.5,
  shrunk to the largest odd size that fits images smaller than 11 pixels; in float64) and
  averaged over images. A perfect image's PSNR (infinite) counts as :data:`MAX_PSNR` dB.
- FID and KID (×100, as the paper tables) between the sets of predictions and targets: FID by
  torchmetrics' formula computed through a low-rank identity (:func:`frechet_distance`, same
  value, milliseconds instead of a d x d non-symmetric eigendecomposition), KID with
  torchmetrics' ``KernelInceptionDistance`` (polynomial kernel, 100 subsets of ``min(n, 50)``
  images, seeded so that repeated calls agree). Features
  come from pytorch-fid's Inception-v3 when ``feature_model`` is a weights path (keys ``fid``,
  ``kid``, comparable with the peers up to their PNG round trip), else from the ImageNet
  MobileNetV2 shipped offline (keys ``fid_mobilenet``, ``kid_mobilenet``: a clearly labelled
  stand-in, **not** comparable with published FIDs). Each image goes through the feature network
  once per :meth:`update`; the features are fed to both metrics. With fewer than 2 predictions
  or targets FID and KID are NaN (a warning is logged). KID is the unbiased MMD estimate, so a
  set compared with itself scores slightly below 0 (two samples of one distribution: about 0).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

logger = logging.getLogger(__name__)

#: PSNR (dB) given to an image predicted exactly (its PSNR is infinite)
MAX_PSNR = 100.0
#: images per KID subset (fewer when fewer images were seen) and number of subsets
KID_SUBSET_SIZE = 50
KID_SUBSETS = 100


class MobileNetFeatures(nn.Module):
    """ImageNet MobileNetV2 as a feature extractor: RGB ``(B, 3, H, W)`` -> ``(B, 1280)``.

    Input in [0, 1] (float) or [0, 255] (uint8); resized to ``size`` x ``size`` (bilinear,
    antialiased when shrinking), standardised with the ImageNet mean / std, then the globally
    averaged last feature map. ``num_features`` tells torchmetrics the feature size.
    """

    num_features = 1280

    def __init__(self, weights: str | None = None, size: int = 224) -> None:
        super().__init__()
        from mango.models.encoders.mobilenet import (
            IMAGENET_MEAN,
            IMAGENET_STD,
            load_imagenet_mobilenet_v2,
        )

        self.net = load_imagenet_mobilenet_v2(weights).eval().requires_grad_(False)
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if tuple(x.shape[-2:]) != (self.size, self.size):
            shrink = min(x.shape[-2:]) > self.size
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=shrink,
            )
        features = self.net.forward_features((x - self.mean) / self.std)
        return features.mean(dim=(2, 3))


class _Precomputed(nn.Module):
    """Identity on ``(N, num_features)`` features, cast to float64 (torchmetrics' feature slot)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features.double()


def feature_extractor(feature_model: str | None) -> tuple[nn.Module, str]:
    """The FID feature network and its key suffix: Inception (``""``) or MobileNetV2."""
    if feature_model is not None:
        from mango.models.encoders.inception import load_fid_inception

        return load_fid_inception(feature_model), ""
    return MobileNetFeatures(), "_mobilenet"


class TranslationMetrics(Metric):
    """Accumulates predictions and targets in [-1, 1]; see the module docstring for the scores.

    ``feature_model``: path of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (keys
    ``fid`` / ``kid``) or None for the offline MobileNetV2 (``fid_mobilenet`` /
    ``kid_mobilenet``). ``extractor`` replaces that network by any module mapping [0, 1] images
    ``(B, 3, H, W)`` to ``(B, d)`` (keys ``fid_<suffix>`` / ``kid_<suffix>``); ``fid=False``
    skips FID / KID (targets that are not RGB images); ``kid_subsets`` is the number of KID
    subsets averaged.

    Example:
        >>> metric = TranslationMetrics(fid=False)
        >>> metric.update(torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5))
        >>> {k: round(v, 4) for k, v in metric.compute().items()}
        {'mae': 5.0, 'mse': 2.5, 'rmse': 5.0, 'psnr': 12.0412, 'ssim': 0.9231}
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        feature_model: str | None = None,
        fid: bool = True,
        extractor: nn.Module | None = None,
        suffix: str = "custom",
        kid_subsets: int = KID_SUBSETS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kid_subsets = kid_subsets
        self.extractor: nn.Module | None = None
        self.suffix = ""
        if fid:
            if extractor is not None:
                self.extractor, self.suffix = extractor, f"_{suffix}"
            else:
                self.extractor, self.suffix = feature_extractor(feature_model)
            self.extractor.eval().requires_grad_(False)
        for name in ("abs_sum", "sq_sum", "psnr_sum", "ssim_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("values", "images"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def train(self, mode: bool = True) -> TranslationMetrics:
        """The feature network always stays in eval mode."""
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()
        return self

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and targets, both ``(B, 3, H, W)`` in [-1, 1]."""
        if preds.shape != target.shape or preds.ndim != 4 or preds.shape[1] != 3:
            raise ValueError(
                f"expected preds and target of one shape (B, 3, H, W), got "
                f"{tuple(preds.shape)} and {tuple(target.shape)}"
            )
        preds, target = preds.detach(), target.detach()
        diff = preds.double() - target.double()
        self.abs_sum += diff.abs().sum()
        self.sq_sum += diff.square().sum()
        self.values += diff.numel()
        self.images += preds.shape[0]
        fake = ((preds.double() + 1.0) / 2.0).clamp(0.0, 1.0)
        real = ((target.double() + 1.0) / 2.0).clamp(0.0, 1.0)
        psnr = peak_signal_noise_ratio(fake, real, data_range=1.0, reduction="none", dim=(1, 2, 3))
        self.psnr_sum += psnr.clamp(max=MAX_PSNR).sum()
        size = min(11, *preds.shape[-2:])
        kernel = size if size % 2 else size - 1
        ssim = structural_similarity_index_measure(
            fake, real, data_range=1.0, kernel_size=kernel, reduction="none"
        )
        self.ssim_sum += ssim.sum()
        if self.extractor is not None:
            with torch.no_grad():
                self.fake_features.append(self.extractor(fake.float()).double())
                self.real_features.append(self.extractor(real.float()).double())

    def compute(self) -> dict[str, float]:
        """The scores as Python floats (see the module docstring); NaN before any update."""
        values, images = int(self.values), int(self.images)
        mse = float(self.sq_sum) / values if values else math.nan
        scores = {
            "mae": 10.0 * float(self.abs_sum) / values if values else math.nan,
            "mse": 10.0 * mse,
            "rmse": 10.0 * math.sqrt(mse),
            "psnr": float(self.psnr_sum) / images if images else math.nan,
            "ssim": float(self.ssim_sum) / images if images else math.nan,
        }
        if self.extractor is not None:
            fid, kid = self._fid_kid()
            scores[f"fid{self.suffix}"] = fid
            scores[f"kid{self.suffix}"] = kid
        return scores

    def _fid_kid(self) -> tuple[float, float]:
        """FID and 100 · KID of the accumulated features (NaN with fewer than 2 images a side)."""
        if not self.real_features or not self.fake_features:
            real = fake = torch.zeros(0, 1, dtype=torch.float64)
        else:
            real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        n = min(real.shape[0], fake.shape[0])
        if n < 2:
            logger.warning(
                "FID/KID need at least 2 predictions and 2 targets, got %d and %d; reporting NaN",
                fake.shape[0],
                real.shape[0],
            )
            return math.nan, math.nan
        with warnings.catch_warnings():  # "KID will save all extracted features": we know
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            kid = KernelInceptionDistance(
                feature=_Precomputed(real.shape[1]),
                subsets=self.kid_subsets,
                normalize=True,
                subset_size=min(n, KID_SUBSET_SIZE),
                sync_on_compute=False,
            )
        kid.to(real.device)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            kid_mean, _ = kid.compute()
        return frechet_distance(real, fake), 100.0 * float(kid_mean)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between the Gaussians fitted to two feature sets ``(n_r, d)`` and ``(n_f, d)``.

    ``FID = |μ_r - μ_f|² + tr Σ_r + tr Σ_f - 2 tr (Σ_r Σ_f)^{1/2}`` (unbiased covariances),
    the formula of torchmetrics' ``FrechetInceptionDistance`` (tested to agree with it). The
    last trace is computed exactly but without its non-symmetric d x d eigendecomposition (tens
    of seconds on a CPU for d = 2048): with centred features ``X_r``, ``X_f`` the non-zero
    eigenvalues of ``Σ_r Σ_f`` are the squared singular values of ``X_r X_fᵀ / c``,
    ``c = sqrt((n_r - 1)(n_f - 1))``, so ``tr (Σ_r Σ_f)^{1/2} = ‖X_r X_fᵀ‖_* / c`` (nuclear
    norm of an n_r x n_f matrix). When both sets are larger than d it uses
    ``tr (Σ_r^{1/2} Σ_f Σ_r^{1/2})^{1/2}`` with symmetric eigendecompositions instead.
    """
    real, fake = real.double(), fake.double()
    n_real, n_fake, dim = real.shape[0], fake.shape[0], real.shape[1]
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    x_real, x_fake = real - mean_real, fake - mean_fake
    traces = x_real.square().sum() / (n_real - 1) + x_fake.square().sum() / (n_fake - 1)
    if min(n_real, n_fake) <= dim:
        scale = math.sqrt((n_real - 1) * (n_fake - 1))
        cross = torch.linalg.svdvals(x_real @ x_fake.T).sum() / scale
    else:
        cov_real = x_real.T @ x_real / (n_real - 1)
        cov_fake = x_fake.T @ x_fake / (n_fake - 1)
        values, vectors = torch.linalg.eigh(cov_real)
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        cross = torch.linalg.eigvalsh(root @ cov_fake @ root).clamp(min=0).sqrt().sum()
    return float((mean_real - mean_fake).square().sum() + traces - 2.0 * cross)
