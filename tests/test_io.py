"""Writing samples keeps geometry: NIfTI spacing/affine, channel layout, PNG for RGB, grids."""
import nibabel as nib
import numpy as np
from PIL import Image

from synth.io import affine_from_meta, image_grid, save_grid, save_nifti, save_png


def test_nifti_2d_keeps_spacing_and_values(tmp_path):
    img = np.linspace(-1, 1, 2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    affine = affine_from_meta({"spacing": [1.5, 2.0]}, spatial_dims=2)
    out = nib.load(save_nifti(img, tmp_path / "a.nii.gz", affine))
    assert out.shape == (6, 4, 1, 2)  # x, y, singleton z, channels last
    assert np.allclose(out.header.get_zooms()[:3], (1.5, 2.0, 1.0))
    assert out.get_data_dtype() == np.float32
    assert np.allclose(out.get_fdata()[:, :, 0, 1], img[1])


def test_nifti_3d_single_channel_and_given_affine(tmp_path):
    img = np.random.default_rng(0).uniform(-1, 1, (1, 5, 6, 7)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 1]
    out = nib.load(save_nifti(img, tmp_path / "b.nii.gz", affine_from_meta({"affine": affine.tolist()}, 3)))
    assert out.shape == (5, 6, 7)
    assert np.allclose(out.affine, affine)
    assert np.allclose(out.get_fdata(), img[0], atol=1e-6)


def test_png_rgb_roundtrip_and_no_temp_files_left(tmp_path):
    img = np.zeros((3, 4, 5), dtype=np.float32) - 1
    img[0] = 1.0  # pure red
    path = save_png(img, tmp_path / "x.png")
    arr = np.asarray(Image.open(path))
    assert arr.shape == (4, 5, 3) and (arr[..., 0] == 255).all() and (arr[..., 1:] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_grid_layout_and_orientation(tmp_path):
    imgs = -np.ones((5, 1, 8, 6), dtype=np.float32)
    imgs[0, 0, :, -1] = 1.0  # highest y (anterior) row of image 0 -> top row on display
    grid = image_grid(imgs, volume_axes=True, pad=2)
    assert grid.shape == (2 * (6 + 2) + 2, 3 * (8 + 2) + 2)  # 3 columns x 2 rows of 6x8 planes
    assert (grid[2, 2:10] == 255).all() and (grid[3, 2:10] == 0).all()
    path = save_grid(np.random.default_rng(0).uniform(-1, 1, (4, 2, 8, 8, 8)).astype(np.float32), tmp_path / "g.png", scale=1)
    assert Image.open(path).size == (2 * 10 + 2, 2 * 10 + 2)
