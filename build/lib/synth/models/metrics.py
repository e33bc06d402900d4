"""Small image metrics used inside training/validation steps (images in [-1, 1], data range 2)."""
from __future__ import annotations

import torch
from monai.metrics import MMDMetric
from monai.metrics.regression import compute_ssim_and_cs


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(data_range**2 / mse)).mean()


def ssim(x: torch.Tensor, y: torch.Tensor, spatial_dims: int, data_range: float = 2.0) -> torch.Tensor:
    win = min(7, *x.shape[2:])
    win -= 1 - win % 2  # odd window that fits small images
    s, _ = compute_ssim_and_cs(
        y_pred=x.float(), y=y.float(), spatial_dims=spatial_dims, kernel_size=[win] * spatial_dims,
        kernel_sigma=[1.5] * spatial_dims, data_range=data_range, kernel_type="gaussian", k1=0.01, k2=0.03,
    )
    return s.mean()


def mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased linear-kernel MMD (MONAI) between two equal-sized image batches, per pixel so that image
    sizes compare. Needs at least two images on each side."""
    n = min(len(x), len(y))
    return MMDMetric()(x[:n].float().flatten(1), y[:n].float().flatten(1)).mean() / x[0].numel()
