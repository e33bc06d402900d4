"""Set-level distances between image sets (N, C, *S) in [-1, 1]: MMD (MONAI, linear kernel, per pixel),
MS-SSIM diversity (MONAI; mean MS-SSIM over pairs inside one set, scales and kernel fitted to the image size),
and per-feature distribution distances (Wasserstein on reference-standardised features, Kolmogorov-Smirnov)."""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from synth.models.metrics import mmd as _mmd

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as MONAI's default


def mmd(x: np.ndarray, reference: np.ndarray) -> float:
    """Unbiased linear-kernel MMD per pixel (MONAI MMDMetric): near 0 when the mean images agree; being
    unbiased it can dip slightly below 0 for two samples of one distribution."""
    return float(_mmd(torch.as_tensor(x).float(), torch.as_tensor(reference).float()))


def ms_ssim_settings(spatial: tuple[int, ...]) -> dict:
    """The most scales (<= 5, Wang's weights truncated and renormalised) and the largest odd kernel (<= 7)
    that MONAI accepts for this image size; 1 scale means plain SSIM (images too small for two scales)."""
    size = min(spatial)
    for levels in range(5, 1, -1):
        for kernel in (7, 5, 3):
            if size // max(1, levels - 1) ** 2 > kernel - 1 and size // 2 ** (levels - 1) >= kernel:
                w = np.asarray(MS_SSIM_WEIGHTS[:levels])
                return {"kernel_size": kernel, "weights": tuple(float(v) for v in w / w.sum()), "scales": levels}
    kernel = max(1, min(7, size) - (1 - min(7, size) % 2))
    return {"kernel_size": kernel, "weights": (1.0,), "scales": 1}


def _pair_scores(a: torch.Tensor, b: torch.Tensor, spatial_dims: int, settings: dict) -> torch.Tensor:
    from monai.metrics import MultiScaleSSIMMetric
    from monai.metrics.regression import compute_ssim_and_cs

    k = settings["kernel_size"]
    if settings["scales"] == 1:
        s, _ = compute_ssim_and_cs(y_pred=a, y=b, spatial_dims=spatial_dims, kernel_size=[k] * spatial_dims,
                                   kernel_sigma=[1.5] * spatial_dims, data_range=2.0, kernel_type="gaussian", k1=0.01, k2=0.03)
        return s.flatten(1).mean(1)
    metric = MultiScaleSSIMMetric(spatial_dims=spatial_dims, data_range=2.0, kernel_size=k, weights=settings["weights"])
    return metric(a, b).flatten()


def pairwise_ms_ssim(images: np.ndarray, spatial_dims: int, max_pairs: int = 100, seed: int = 0) -> float:
    """Mean MS-SSIM over distinct pairs of one set (all pairs, or `max_pairs` random ones): high = alike."""
    x = torch.as_tensor(images).float()
    n = len(x)
    if n < 2:
        return float("nan")
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    if len(pairs) > max_pairs:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)]
    settings = ms_ssim_settings(tuple(x.shape[2:]))
    scores = [_pair_scores(x[pairs[k:k + 64, 0]], x[pairs[k:k + 64, 1]], spatial_dims, settings) for k in range(0, len(pairs), 64)]
    return float(torch.cat(scores).mean())


def feature_distances(x: np.ndarray, reference: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per feature: Wasserstein-1 distance in units of the reference's standard deviation (so features of any
    scale average), and the two-sample KS statistic (0 = same distribution, 1 = disjoint) with its p-value."""
    out = {}
    for k, name in enumerate(names):
        a, r = x[:, k], reference[:, k]
        scale = r.std() or np.concatenate([a, r]).std() or 1.0
        ks = stats.ks_2samp(a, r)
        out[name] = {"wasserstein": float(stats.wasserstein_distance(a, r) / scale), "ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
    return out
