"""Real file formats for the data tests, built from nibabel / PIL arrays: objects defined in world millimetres and
written through any affine (oblique, LPS, anisotropic), MR-like brains, head CT in int16 Hounsfield units, RGB
histology-like tiles. Not a test module: imported by tests."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from synth.data.phantom import BACKGROUND, CSF, GREY, LESION, SKULL, WHITE, make_phantom

HU = {BACKGROUND: -1024.0, SKULL: 1200.0, CSF: 8.0, GREY: 40.0, WHITE: 25.0, LESION: 60.0}


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


def affine_for(spacing, shape, rotate: np.ndarray | None = None, flip=(1, 1, 1), center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel -> world of a grid of `shape` with `spacing`, optionally rotated (oblique) and flipped (LPS: (-1,-1,1)),
    whose centre lies at `center` mm."""
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if rotate is None else rotate) @ np.diag(np.asarray(spacing, float) * np.asarray(flip, float))
    a[:3, 3] = np.asarray(center, float) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def write_world(path: Path, field, spacing, shape, rotate=None, flip=(1, 1, 1), dtype=np.float32, channels: int = 0) -> np.ndarray:
    """Sample `field(world (3, N)) -> values (N,) or (C, N)` on a grid and save it as NIfTI; returns the affine."""
    affine = affine_for(spacing, shape, rotate, flip)
    ijk = np.indices(shape).reshape(3, -1).astype(float)
    values = np.asarray(field(affine[:3, :3] @ ijk + affine[:3, 3:4]))
    data = values.reshape(*shape) if values.ndim == 1 else np.moveaxis(values.reshape(len(values), *shape), 0, -1)
    if np.issubdtype(dtype, np.integer):
        data = np.rint(data)
    nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(path))
    return affine


def cuboid(world: np.ndarray) -> np.ndarray:
    """100 inside a 60 x 40 x 20 mm box centred at the origin with a 10 x 10 x 10 mm 'nose' on its +x (left) side."""
    x, y, z = world
    body = (np.abs(x) <= 30) & (np.abs(y) <= 20) & (np.abs(z) <= 10)
    nose = (x > 30) & (x <= 40) & (np.abs(y) <= 5) & (np.abs(z) <= 5)
    return np.where(body | nose, 100.0, 0.0)


def from_grid(base: np.ndarray, spacing: float, order: int = 1, cval: float = 0.0):
    """A field sampling `base` (X, Y, Z), a grid of `spacing` mm centred on the origin."""
    from scipy.ndimage import map_coordinates

    center = (np.array(base.shape) - 1) / 2.0

    def field(world):
        return map_coordinates(base, world / spacing + center[:, None], order=order, cval=cval)

    return field


def mr_brain(seed: int, scale: float = 383.0) -> tuple[np.ndarray, float]:
    """An MR-like T1 head (phantom, 64^3 at 3 mm = 192 mm) in scanner units up to ~`scale`, with noise."""
    p = make_phantom((64, 64, 64), channels=1, seed=seed, noise=0.0)
    img = p["image"][0] * scale + np.random.default_rng(seed).normal(0, 0.01 * scale, (64, 64, 64))
    return np.clip(img, 0, None).astype(np.float32), 3.0


def head_ct(seed: int) -> tuple[np.ndarray, float]:
    """A head CT in Hounsfield units (air -1024, skull 1200, CSF 8, grey 40, white 25, lesion 60), 64^3 at 3 mm."""
    tissue = make_phantom((64, 64, 64), channels=1, seed=seed, lesion=True)["tissue"]
    hu = np.vectorize(HU.get, otypes=[np.float32])(tissue)
    return hu + np.random.default_rng(seed).normal(0, 2.0, hu.shape).astype(np.float32), 3.0


def mixed_mr_folder(root: Path, n: int = 4) -> Path:
    """Brain MRIs as a user brings them: different sizes, spacings and orientations (RAS, LPS, anisotropic, oblique)."""
    root.mkdir(parents=True, exist_ok=True)
    geoms = [((2.0, 2.0, 2.0), (100, 100, 90), None, (1, 1, 1)),
             ((1.6, 1.6, 1.6), (120, 120, 110), None, (-1, -1, 1)),
             ((1.0, 1.0, 4.0), (200, 200, 45), None, (1, 1, 1)),
             ((2.2, 2.2, 2.2), (90, 90, 80), rotation(2, 15) @ rotation(0, 8), (-1, 1, 1))]
    for i in range(n):
        base, sp = mr_brain(i)
        spacing, shape, rot, flip = geoms[i % len(geoms)]
        write_world(root / f"sub-{i:02d}_T1w.nii.gz", from_grid(base, sp), spacing, shape, rot, flip, dtype=np.int16)
    return root


def ct_volume(path: Path, seed: int = 0, spacing=(1.2, 1.2, 3.0), shape=(170, 170, 60)) -> Path:
    """One head CT as a scanner writes it: int16 HU, LPS, thin in-plane and thick slices, -1024 outside the head."""
    base, sp = head_ct(seed)
    write_world(path, from_grid(base, sp, cval=-1024.0), spacing, shape, flip=(-1, -1, 1), dtype=np.int16)
    return path


def tiles(root: Path, slides: int = 5, per_slide: int = 4, size: int = 32, ext: str = "png", nested: bool = False) -> Path:
    """RGB 8-bit histology-like tiles, slide<k>_tile<j>.<ext> (or slide<k>/tile<j>.<ext> when nested); each slide has
    its own stain colour, so a split that mixes slides would leak."""
    rng = np.random.default_rng(0)
    for k in range(slides):
        stain = rng.uniform(0.3, 1.0, 3)
        for j in range(per_slide):
            nuclei = (rng.random((size, size)) > 0.85).astype(float)
            img = 255 * (1 - 0.6 * nuclei[..., None] * stain) * rng.uniform(0.85, 1.0, (size, size, 1))
            out = root / f"slide{k}" / f"tile{j}.{ext}" if nested else root / f"slide{k}_tile{j}.{ext}"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out)
    return root
