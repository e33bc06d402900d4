"""The metrics models log while training (synth/models/metrics.py): SSIM/PSNR in the [0, 1] convention, and the
set-level RBF-kernel MMD that sees mode collapse where the linear-kernel MMD does not."""
import pytest
import torch

from synth.data.phantom import make_phantom
from synth.models.metrics import mmd, mmd_rbf, psnr, ssim


@pytest.mark.parametrize("dims", [2, 3])
def test_ssim_and_psnr_on_known_cases(dims):
    """Images in [-1, 1] are scored as [0, 1] images with data range 1. Constant images 0.5 and 0.6 (in [0, 1]):
    SSIM is the luminance term alone, (2 * 0.5 * 0.6 + C1) / (0.5^2 + 0.6^2 + C1) with C1 = 0.01^2 = 0.98361 (in
    [-1, 1] with range 2 it would be (0 + 4e-4) / (0.04 + 4e-4) = 0.0099); PSNR of an offset of 0.1 is 20 dB."""
    x = torch.zeros(2, 1, *[16] * dims)                      # 0.5 in [0, 1]
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)  # (float32 variances of constants are ~1e-7, not 0: abs 3e-3)
    assert ssim(x, x + 0.2, dims).item() == pytest.approx(expected, abs=3e-3)
    assert psnr(x, x + 0.2).item() == pytest.approx(20.0, abs=1e-3)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert ssim(x, x, dims).item() == pytest.approx(1.0, abs=1e-5) and ssim(noisy, x, dims).item() < 0.5
    assert psnr(x, x).item() == 100.0, "identical images score the cap, not inf"


def _phantoms(n: int, offset: int = 0) -> torch.Tensor:
    imgs = []
    for i in range(n):
        im = torch.as_tensor(make_phantom((32, 32), seed=offset + i)["image"], dtype=torch.float32)
        imgs.append((im - im.min()) / (im.max() - im.min()) * 2 - 1)
    return torch.stack(imgs)


def test_rbf_mmd_sees_mode_collapse_where_linear_mmd_does_not():
    real, diverse = _phantoms(32), _phantoms(32, offset=100)  # other real images: a diverse "generator"
    mean_image = real.mean(0, keepdim=True).expand_as(real)   # collapsed onto the mean image
    one_image = real[:1].expand_as(real)                      # collapsed onto one training image
    rbf = {k: mmd_rbf(v, real).item() for k, v in [("diverse", diverse), ("mean", mean_image), ("one", one_image)]}
    linear = {k: mmd(v, real).item() for k, v in [("diverse", diverse), ("mean", mean_image), ("one", one_image)]}
    assert abs(rbf["diverse"]) < 0.02 and rbf["mean"] > 10 * max(rbf["diverse"], 0.01) and rbf["one"] > rbf["mean"], rbf
    # the linear kernel compares mean images only: the collapsed-to-the-mean set looks as good as real images
    assert linear["mean"] <= linear["diverse"] + 1e-3 and abs(linear["mean"]) < 0.01, linear
    with pytest.raises(ValueError, match="two or more"):
        mmd_rbf(real[:1], real)
