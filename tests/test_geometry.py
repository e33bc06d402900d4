"""#15 item 8: real file formats, built here with nibabel / PIL. Oblique affines, LPS vs RAS and anisotropic spacing
keep the physical size (and side) of a structure after resampling; int16 HU map through a CT window and back; 4D
NIfTI and RGB PNG/TIFF are detected; values outside a fixed range are warned about; written samples carry the
grid's affine and, in source units, read back to the images the model made."""
from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from synth.data.intensity import preset, write_sample_nifti
from synth.errors import SynthError
from synth.evaluation.samples import read_samples
from synth.io import save_nifti
from tests.realdata import cuboid, ct_volume, from_grid, head_ct, rotation, write_world
from tests.test_data import make_dm

GEOMETRIES = {  # the same 60 x 40 x 20 mm box (+ nose on +x) as different scanners write it
    "ras": dict(spacing=(1.0, 1.0, 1.0), shape=(100, 60, 40)),
    "lps": dict(spacing=(1.0, 1.0, 1.0), shape=(100, 60, 40), flip=(-1, -1, 1)),
    "anisotropic": dict(spacing=(0.5, 0.5, 3.0), shape=(200, 120, 14)),
    "oblique": dict(spacing=(1.2, 1.2, 1.2), shape=(100, 100, 60), rotate=rotation(2, 25) @ rotation(0, 10)),
}


def _box_folder(root, names=tuple(GEOMETRIES)):
    root.mkdir()
    for name in names:
        write_world(root / f"{name}.nii.gz", cuboid, dtype=np.int16, **GEOMETRIES[name])
    return root


def _items(dm) -> dict[str, np.ndarray]:
    ds = dm.datasets["train"]
    out: dict[str, list] = {}
    for sid, img in zip(ds.ids, ds.images):
        out.setdefault(sid, []).append(img)
    return {k: np.stack(v) for k, v in out.items()}


def test_3d_resampling_keeps_physical_size_and_side(tmp_path):
    """Four scanners' files of one box: after resampling to 2 mm RAS every box measures 70 x 40 x 20 mm with its nose
    on the +x side (before: each file was resized to the image on its own, so the sizes differed by file)."""
    root = _box_folder(tmp_path / "boxes")
    dm = make_dm("folder", root=str(root), spatial_dims=3, image_size=[48, 48, 48], spacing=2.0, split=[1.0, 0.0, 0.0])
    items = _items(dm)
    assert sorted(items) == sorted(GEOMETRIES)
    for name, item in items.items():
        inside = item[0, 0] > 0  # halfway between background (-1) and the box (1)
        idx = np.argwhere(inside)
        extent_mm = (idx.max(0) - idx.min(0) + 1) * 2.0
        np.testing.assert_allclose(extent_mm, [70, 40, 20], atol=4.1, err_msg=name)
        columns = inside.sum(axis=(1, 2))[idx.min(0)[0]: idx.max(0)[0] + 1]
        assert columns[-2:].mean() < 0.5 * columns[:2].mean(), f"{name}: the nose must be on the +x (high index) side"
    assert np.abs(items["ras"] - items["lps"]).mean() < 0.01  # LPS is read as the same anatomy
    meta = dm.meta
    expect = np.diag([2.0, 2.0, 2.0, 1.0])
    expect[:3, 3] = -47.0  # 48 voxels of 2 mm centred on the origin
    np.testing.assert_allclose(meta["affine"], expect)
    assert meta["geometry"]["resampled"] and meta["geometry"]["fov_mm"] == [96.0, 96.0, 96.0]


def test_2d_slices_share_one_physical_scale(tmp_path):
    """In 2D an isotropic and a thick-slice file give the box the same size in pixels; slices are taken at the
    median slice spacing and the written affine says so."""
    root = _box_folder(tmp_path / "boxes", ("ras", "anisotropic"))
    dm = make_dm("folder", root=str(root), image_size=[32, 32], split=[1.0, 0.0, 0.0], slice_range=[0.45, 0.55])
    meta = dm.meta
    s = meta["spacing"][0]
    assert meta["spacing"] == [s, s] and meta["affine"][2][2] == 2.0  # median of 1 and 3 mm slices
    assert s == pytest.approx(100 / 32)  # the largest in-plane extent (100 mm) fits 32 pixels
    sizes = {}
    for name, item in _items(dm).items():
        idx = np.argwhere(item[len(item) // 2, 0] > 0)
        sizes[name] = (idx.max(0) - idx.min(0) + 1) * s
    for name, size in sizes.items():
        np.testing.assert_allclose(size, [70, 40], atol=2 * s + 0.1, err_msg=name)


def test_int16_hu_window_round_trip(tmp_path):
    """A head CT in int16 HU: ct_brain keeps grey/white contrast that percentile scaling flattens, samples are
    written in HU on the grid's affine, and reading them back gives the model's images again."""
    root = tmp_path / "ct"
    root.mkdir()
    for i in range(3):
        ct_volume(root / f"ct{i}.nii.gz", seed=i)
    assert nib.load(root / "ct0.nii.gz").get_data_dtype() == np.int16
    kw = dict(root=str(root), spatial_dims=3, image_size=[32, 32, 32], spacing=6.0, split=[1.0, 0.0, 0.0])
    window, plain = make_dm("folder", intensity="ct_brain", **kw), make_dm("folder", **kw)
    assert window.meta["intensity"]["name"] == "ct_brain" and window.meta["intensity"]["units"] == "HU"
    assert plain.meta["intensity"]["name"] == "percentile"
    base, sp = head_ct(0)
    tissue = from_grid(base, sp)  # HU of the phantom at the grid's voxel centres
    grid = np.asarray(window.meta["affine"])
    world = grid[:3, :3] @ np.indices((32, 32, 32)).reshape(3, -1) + grid[:3, 3:4]
    hu = tissue(world).reshape(32, 32, 32)
    grey, white = np.abs(hu - 40) < 3, np.abs(hu - 25) < 3

    def contrast(dm):
        x = _items(dm)["ct0"][0, 0]
        return x[grey].mean() - x[white].mean()

    assert contrast(window) > 0.1 > 0.02 > contrast(plain)  # window: ~0.15 of [-1, 1] for 15 HU; percentile: ~0.005
    item = _items(window)["ct0"][0]
    samples = tmp_path / "samples"
    for k in range(2):
        write_sample_nifti(item, samples / f"sample_{k:05d}.nii.gz", grid, window.meta)
    written = nib.load(samples / "sample_00000.nii.gz")
    np.testing.assert_allclose(written.affine, grid)
    assert written.header.get_zooms() == (6.0, 6.0, 6.0)
    values = written.get_fdata()
    assert values.min() >= -1024 and values.max() <= 3071 and values.min() < -1000 and values.max() > 300  # air .. (smoothed) skull in HU
    inner = np.abs(hu - 40) < 1
    assert abs(np.median(values[inner]) - 40) < 5
    back, _ = read_samples(samples, (1, 32, 32, 32))
    np.testing.assert_allclose(back[0], item, atol=1e-4)
    elsewhere = tmp_path / "elsewhere"  # HU images made by another tool (no preset in the file): the data's preset reads them
    save_nifti(values[None], elsewhere / "ct_made_elsewhere.nii.gz", grid)
    with pytest.raises(SynthError, match="not \\[-1, 1\\] and no synth intensity preset in its header"):
        read_samples(elsewhere, (1, 32, 32, 32))
    np.testing.assert_allclose(read_samples(elsewhere, (1, 32, 32, 32), meta=window.meta)[0][0], item, atol=1e-4)


def test_4d_nifti_and_rgb_png_tiff_are_detected(tmp_path):
    four, rgb, tif16 = (tmp_path / n for n in ("four", "rgb", "tif16"))
    for d in (four, rgb, tif16):
        d.mkdir()
    for i in range(3):
        write_world(four / f"v{i}.nii.gz", lambda w: np.stack([cuboid(w), 100 - cuboid(w) + w[0]]), (2, 2, 2), (50, 30, 20))
        g = np.random.default_rng(i).integers(0, 255, (24, 24, 3)).astype(np.uint8)
        Image.fromarray(g).save(rgb / f"c{i}.png")
        Image.fromarray(g).save(rgb / f"d{i}.tif")
        Image.fromarray((g[..., 0].astype(np.uint16) * 200)).save(tif16 / f"t{i}.tif")
    dm = make_dm("folder", root=str(four), spatial_dims=3, image_size=[16, 16, 16])
    assert dm.channels == 2 and dm.meta["channel_names"] == ["ch0", "ch1"]
    assert dm.meta["intensity"]["detected_from"].startswith("NIfTI")
    dm = make_dm("folder", root=str(rgb), image_size=[16, 16])
    assert dm.channels == 3 and dm.meta["channel_names"] == ["R", "G", "B"] and dm.meta["n_train"] == 4
    assert dm.meta["intensity"]["name"] == "uint8" and dm.meta["intensity"]["detected_from"] == "8-bit PNG/JPG/TIFF files"
    dm = make_dm("folder", root=str(tif16), image_size=[24, 24])
    assert dm.channels == 1 and dm.meta["intensity"]["name"] == "percentile" and dm.images("train").max() == 1


def test_values_outside_a_fixed_range_and_ct_under_mr_scaling_are_warned(tmp_path, caplog):
    t1, ct = tmp_path / "t1", tmp_path / "ct"
    for d in (t1, ct):
        d.mkdir()
    for i in range(3):
        write_world(t1 / f"t1_{i}.nii.gz", lambda w: cuboid(w) * 3.83 + np.abs(w[0]), (2, 2, 2), (50, 30, 20))  # up to 383
        ct_volume(ct / f"ct{i}.nii.gz", seed=i, spacing=(3, 3, 6), shape=(70, 70, 30))
    with caplog.at_level(logging.WARNING, logger="synth.data"):
        make_dm("folder", root=str(t1), intensity="uint8", spatial_dims=3, image_size=[16, 16, 16])
    assert "far outside the range [0, 255] of data.intensity=uint8 (min 1, max 4" in caplog.text and "are clipped" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synth.data"):
        make_dm("folder", root=str(ct), spatial_dims=3, image_size=[16, 16, 16])
    assert "looks like CT in Hounsfield units" in caplog.text and "data.intensity=ct_brain" in caplog.text


def test_window_preset_is_monotonic_and_inverts_on_the_clip_range():
    m = preset("ct_brain")
    hu = np.linspace(-1024, 3071, 4096, dtype=np.float32)[None]
    x = m.forward(hu)
    assert np.all(np.diff(x[0]) > 0) and x.min() == -1 and x.max() == 1
    np.testing.assert_allclose(m.forward(np.array([[0.0, 40.0, 80.0]])), [[-0.8, 0.0, 0.8]], atol=1e-6)
    np.testing.assert_allclose(m.inverse(x), hu, atol=0.01)
    assert not preset("percentile").invertible and preset("uint8").inverse(np.array([-1.0, 1.0])).tolist() == [0.0, 255.0]
