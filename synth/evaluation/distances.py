"""Image-level measurements the set-level metrics are built from, for images (N, C, *S) in [-1, 1]:

* SSIM / MS-SSIM (MONAI) with one range convention: images are mapped to [0, 1] and data_range = 1 (SSIM's
  luminance term assumes non-negative intensities; on [-1, 1] it turns negative and MS-SSIM's ReLU zeroes it).
  `pair_scores` gives the MS-SSIM of pairs inside one set (diversity), `ssim`/`psnr` of paired images
  (reconstruction).
* Gram matrices for MMD: a linear kernel on pixels (compares mean images only) and a Gaussian kernel on pixels
  (`rbf_bandwidth` fixed from the real reference, so every row uses the same kernel; sees collapse).
* `sharpness`: per image, mean |Laplacian| over the intensity SD (high-frequency content, blind to scale).
* `w1_ks`: Wasserstein-1 and the Kolmogorov-Smirnov statistic of two samples of one feature.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as MONAI's default


def unit_range(images) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float tensor (clipped): the range every SSIM here is computed on, with data_range 1."""
    return ((torch.as_tensor(images).float().clamp(-1, 1) + 1) / 2)


def ms_ssim_settings(spatial: tuple[int, ...]) -> dict:
    """The most scales (<= 5, Wang's weights truncated and renormalised) and the largest odd kernel (<= 7)
    that MONAI accepts for this image size; 1 scale means plain SSIM (images too small for two scales)."""
    size = min(spatial)
    for levels in range(5, 1, -1):
        for kernel in (7, 5, 3):
            if size // max(1, levels - 1) ** 2 > kernel - 1 and size // 2 ** (levels - 1) >= kernel:
                w = np.asarray(MS_SSIM_WEIGHTS[:levels])
                return {"kernel_size": kernel, "weights": tuple(float(v) for v in w / w.sum()), "scales": levels,
                        "range": "images mapped to [0, 1], data_range 1"}
    kernel = max(1, min(7, size) - (1 - min(7, size) % 2))
    return {"kernel_size": kernel, "weights": (1.0,), "scales": 1, "range": "images mapped to [0, 1], data_range 1"}


def ssim(a, b, spatial_dims: int, kernel_size: int | None = None) -> torch.Tensor:
    """Per-pair SSIM (N,) of two [-1, 1] batches, computed on [0, 1] with data_range 1."""
    from monai.metrics.regression import compute_ssim_and_cs

    a, b = unit_range(a), unit_range(b)
    k = kernel_size or max(1, min(7, *a.shape[2:]) - (1 - min(7, *a.shape[2:]) % 2))
    s, _ = compute_ssim_and_cs(y_pred=a, y=b, spatial_dims=spatial_dims, kernel_size=[k] * spatial_dims,
                               kernel_sigma=[1.5] * spatial_dims, data_range=1.0, kernel_type="gaussian", k1=0.01, k2=0.03)
    return s.flatten(1).mean(1)


def psnr(a, b) -> torch.Tensor:
    """Per-pair PSNR (N,) in dB on [0, 1] with data_range 1 (the same value as on [-1, 1] with range 2)."""
    mse = (unit_range(a) - unit_range(b)).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ms_ssim(a, b, spatial_dims: int, settings: dict | None = None) -> torch.Tensor:
    """Per-pair MS-SSIM (N,) of two [-1, 1] batches (plain SSIM when the images are too small for 2 scales)."""
    from monai.metrics import MultiScaleSSIMMetric

    settings = settings or ms_ssim_settings(tuple(a.shape[2:]))
    if settings["scales"] == 1:
        return ssim(a, b, spatial_dims, settings["kernel_size"])
    metric = MultiScaleSSIMMetric(spatial_dims=spatial_dims, data_range=1.0, kernel_size=settings["kernel_size"], weights=settings["weights"])
    return metric(unit_range(a), unit_range(b)).flatten()


def pair_scores(images: np.ndarray, spatial_dims: int, max_pairs: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MS-SSIM of distinct pairs inside one set: all pairs, or `max_pairs` random ones. Returns (pairs (P, 2),
    scores (P,)); their mean is the set's diversity score (high = images alike)."""
    x = torch.as_tensor(images).float()
    n = len(x)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64).reshape(-1, 2)
    if len(pairs) > max_pairs:
        pairs = pairs[np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))]
    if not len(pairs):
        return pairs, np.zeros(0)
    settings = ms_ssim_settings(tuple(x.shape[2:]))
    scores = [ms_ssim(x[pairs[k:k + 64, 0]], x[pairs[k:k + 64, 1]], spatial_dims, settings) for k in range(0, len(pairs), 64)]
    return pairs, torch.cat(scores).double().numpy()


def pairwise_ms_ssim(images: np.ndarray, spatial_dims: int, max_pairs: int = 1000, seed: int = 0) -> float:
    """Mean MS-SSIM over distinct pairs of one set: 1 = all images identical."""
    _, scores = pair_scores(images, spatial_dims, max_pairs, seed)
    return float(scores.mean()) if len(scores) else float("nan")


# ----- kernels -------------------------------------------------------------------------------------------
def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear kernel <a_i, b_j> between flattened images, per pixel (divided by the pixel count)."""
    x, y = torch.as_tensor(a).double().flatten(1), torch.as_tensor(b).double().flatten(1)
    return (x @ y.T).numpy() / x.shape[1]


def squared_distances(gxy: np.ndarray, gxx_diag: np.ndarray, gyy_diag: np.ndarray) -> np.ndarray:
    return np.maximum(gxx_diag[:, None] + gyy_diag[None, :] - 2 * gxy, 0.0)


def rbf_bandwidth(reference_gram: np.ndarray) -> float:
    """Median squared distance between distinct reference images (the median heuristic), fixed from the real
    reference alone so that every row of a report is measured with the same kernel."""
    d2 = squared_distances(reference_gram, np.diag(reference_gram), np.diag(reference_gram))
    off = d2[~np.eye(len(d2), dtype=bool)]
    med = float(np.median(off)) if len(off) else 0.0
    return med if med > 0 else 1.0


def rbf(d2: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian kernel exp(-d^2 / bandwidth) on squared per-pixel distances."""
    return np.exp(-d2 / bandwidth)


# ----- per-image and per-feature helpers ------------------------------------------------------------------
def sharpness(images: np.ndarray) -> np.ndarray:
    """Per image: mean |Laplacian| / intensity SD, averaged over channels. Blur lowers it, noise raises it;
    scaling an image's intensities leaves it unchanged."""
    out = np.zeros(len(images))
    for i, img in enumerate(np.asarray(images, dtype=np.float64)):
        out[i] = np.mean([np.abs(ndimage.laplace(ch, mode="nearest")).mean() / max(ch.std(), 1e-6) for ch in img])
    return out


def w1_ks_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a (n, F) and b (m, F): Wasserstein-1 distance and two-sample KS statistic (as scipy.stats'
    wasserstein_distance and ks_2samp), from the difference of the two empirical CDFs along the pooled sorted
    values; the KS maximum is taken at the end of each run of tied values."""
    pooled = np.concatenate([a, b])
    step = np.concatenate([np.full(len(a), len(b)), np.full(len(b), -len(a))])  # integers: ties cancel exactly
    order = np.argsort(pooled, axis=0, kind="stable")
    values = np.take_along_axis(pooled, order, axis=0)
    diff = np.cumsum(step[order], axis=0) / (len(a) * len(b))  # F_a - F_b just after each pooled value
    w1 = (np.abs(diff[:-1]) * np.diff(values, axis=0)).sum(axis=0)
    run_end = np.ones(values.shape, dtype=bool)
    run_end[:-1] = values[1:] != values[:-1]
    return w1, np.where(run_end, np.abs(diff), 0).max(axis=0)


def w1_ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """w1_ks_columns for one feature."""
    w1, ks = w1_ks_columns(np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[:, None])
    return float(w1[0]), float(ks[0])


def feature_distances(x: np.ndarray, reference: np.ndarray, names: list[str], scale: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per feature: Wasserstein-1 distance in units of the reference's standard deviation (so features of any
    scale average), and the two-sample KS statistic (0 = same distribution, 1 = disjoint) with its p-value."""
    from scipy import stats

    scale = feature_scale(reference) if scale is None else scale
    w1, ks = w1_ks_columns(x, reference)
    return {name: {"wasserstein": float(w1[k] / scale[k]), "ks": float(ks[k]), "ks_pvalue": float(stats.ks_2samp(x[:, k], reference[:, k]).pvalue)}
            for k, name in enumerate(names)}


def feature_scale(reference: np.ndarray) -> np.ndarray:
    """The reference SD of each feature (1 where a feature is constant in the reference)."""
    sd = reference.std(axis=0)
    return np.where(sd > 0, sd, 1.0)
