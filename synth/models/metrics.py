"""Small image metrics used inside training/validation steps, on image batches (N, C, *S) in [-1, 1].

- `psnr`, `ssim`: paired reconstruction metrics (MONAI PSNRMetric / SSIMMetric). One convention everywhere in
  synth (also MS-SSIM in synth/evaluation): images are mapped to [0, 1] and the data range is 1. SSIM is not
  shift-invariant (its luminance term compares means against a constant scaled by the range), so [-1, 1] with
  range 2 gives other, non-standard values; PSNR is the same either way.
- `mmd_rbf`: the set-level validation metric of the sampling families (GAN, VAE, AE: `val/mmd_rbf`): unbiased
  squared MMD with a sum of Gaussian (RBF) kernels on pixels, bandwidths from the real set. It sees mode
  collapse (a set of identical images scores far from a varied real set).
- `mmd`: unbiased linear-kernel MMD (MONAI MMDMetric): the squared distance between the two mean images, blind to
  collapse; kept as a mean-brightness/shape check (`val/mmd`, evaluation's `mmd` column).
"""
from __future__ import annotations

import torch
from monai.metrics import MMDMetric, PSNRMetric, SSIMMetric

PSNR_CAP = 100.0                             # dB: identical images (MSE 0) score this instead of inf
RBF_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)      # kernel widths, as multiples of the real set's median squared distance


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (the range PSNR and SSIM are computed in, data_range=1)."""
    return (x.float() + 1) / 2


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean PSNR (dB) over the batch, MONAI PSNRMetric on [0, 1] images with max_val=1, capped at PSNR_CAP."""
    per_image = PSNRMetric(max_val=1.0)(to_unit(x), to_unit(y))  # (N, 1): a metric object reduces only in aggregate()
    return per_image.clamp(max=PSNR_CAP).mean()


def ssim_window(spatial: tuple[int, ...]) -> int:
    """The usual 7-voxel Gaussian window, or the largest odd one that fits small images."""
    win = min(7, *spatial)
    return win - (1 - win % 2)


def ssim(x: torch.Tensor, y: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Mean SSIM over the batch: MONAI SSIMMetric on [0, 1] images, data_range=1, Gaussian window (sigma 1.5,
    7 voxels or the largest odd size that fits), k1=0.01, k2=0.03 (Wang et al. 2004)."""
    win = ssim_window(tuple(x.shape[2:]))
    metric = SSIMMetric(spatial_dims=spatial_dims, data_range=1.0, kernel_type="gaussian", win_size=win, kernel_sigma=1.5,
                        k1=0.01, k2=0.03)
    return metric(to_unit(x), to_unit(y)).mean()  # (N, 1) per image -> batch mean


def mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased linear-kernel MMD (MONAI) between two equal-sized image batches, per pixel so that image
    sizes compare: the squared distance of the mean images (blind to diversity). Needs two images a side."""
    n = min(len(x), len(y))
    return MMDMetric()(x[:n].float().flatten(1), y[:n].float().flatten(1)).mean() / x[0].numel()


def mmd_rbf(x: torch.Tensor, real: torch.Tensor, scales=RBF_SCALES) -> torch.Tensor:
    """Unbiased squared MMD (Gretton et al. 2012) between a generated set `x` and a real set `real` (sizes may
    differ, two or more each), with the kernel k(a, b) = mean over s in `scales` of exp(-|a - b|^2 / (s * m)) on
    flattened pixels, where m is the median squared distance between distinct real images (median heuristic,
    taken from the real set alone so that the value compares across validations of one run). About 0 for two
    samples of one distribution (slightly negative is possible), larger = further apart; a collapsed set (all
    images alike) scores well above 0 even when its mean image matches the real one."""
    a, b = x.float().flatten(1), real.float().flatten(1)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"mmd_rbf needs two or more images in each set (got {len(a)} and {len(b)})")
    d_aa, d_bb, d_ab = torch.cdist(a, a).pow(2), torch.cdist(b, b).pow(2), torch.cdist(a, b).pow(2)
    off_b = ~torch.eye(len(b), dtype=torch.bool, device=b.device)
    m = d_bb[off_b].median().clamp_min(1e-8)

    def k(d: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.exp(-d / (s * m)) for s in scales]).mean(0)

    off_a = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    return k(d_aa)[off_a].mean() + k(d_bb)[off_b].mean() - 2 * k(d_ab).mean()
