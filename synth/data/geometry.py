"""Geometry harmonisation for volumes: one target spacing, one orientation (world RAS axes), one field of view.

`plan` chooses the grid from the files' headers (`data.spacing`): auto fits the largest file's physical extent
into image_size with isotropic voxels (2D: in-plane; slices at the files' median slice spacing); for one volume
in 3D, auto keeps its coarsest native spacing so that image_size cubes can be cut from it. `resample` maps a
volume onto that grid through its affine (oblique and LPS files included) with scipy: Gaussian anti-aliasing
where the grid is coarser, then linear interpolation; the field of view (spacing x image_size) is centred on
the foreground, padded with the background value. `sample_affine` is the affine written with generated images:
the target spacing, centred on the world origin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.errors import SynthError


@dataclass(frozen=True)
class Grid:
    spacing: tuple[float, float, float]  # mm per voxel along world x, y, z (2D: z = distance between slices)
    why: str = ""  # how it was chosen (for the log and data_meta.json)

    def to_meta(self, image_size) -> dict:
        fov = [round(s * n, 3) for s, n in zip(self.spacing, image_size)]
        return {"spacing": list(self.spacing), "fov_mm": fov, "orientation": "RAS", "resampled": True, "chosen": self.why}


def world_extent(affine: np.ndarray, shape) -> np.ndarray:
    """Physical size (mm) of a voxel grid along world x, y, z (voxel edges included)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners
    return world.max(1) - world.min(1)


def _axis_spacing(affine: np.ndarray) -> np.ndarray:
    """Spacing of the voxel axis closest to each world axis."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    out = np.empty(3)
    for w in range(3):
        out[w] = zooms[int(np.argmax(np.abs(affine[w, :3]) / zooms))]
    return out


def parse_spacing(value, spatial_dims: int) -> tuple[float, float, float] | str | None:
    """`data.spacing`: auto | null | a number | [x, y, z] (mm)."""
    if value is None or value == "auto":
        return value
    try:
        from omegaconf import ListConfig, OmegaConf

        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value)
    except ImportError:  # pragma: no cover
        pass
    vals = [value] * 3 if isinstance(value, (int, float)) else list(value) if isinstance(value, (list, tuple)) else None
    if vals is None or len(vals) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in vals):
        raise SynthError(f"data.spacing={value} must be auto, null, a number or [x, y, z] in mm (> 0): e.g. data.spacing=1.0")
    return tuple(float(v) for v in vals)


def plan(headers: list, spatial_dims: int, image_size, spacing, one_volume: bool = False) -> Grid | None:
    """The target grid for NIfTI data, or None (images, generated data, data.spacing=null: each item is fitted
    to image_size on its own)."""
    spacing = parse_spacing(spacing, spatial_dims)
    vols = [h for h in headers if h is not None and h.kind == "nifti"]
    if spacing is None or not vols:
        return None
    if spacing != "auto":
        return Grid(spacing, "data.spacing")
    size = [int(s) for s in image_size]
    extents = np.array([world_extent(h.affine, h.shape) for h in vols])
    native = np.array([_axis_spacing(h.affine) for h in vols])
    if spatial_dims == 2:
        s = float(np.max(extents[:, :2] / np.array(size[:2])))
        z = float(np.median(native[:, 2]))
        grid = (s, s, z)
        why = f"auto: the largest in-plane extent ({extents[:, :2].max():.0f} mm) over {size[0]}x{size[1]}, slices at the median spacing"
    elif one_volume:
        s = float(native.max())
        grid, why = (s, s, s), "auto: the volume's coarsest spacing (cubes of image_size are cut from it)"
    else:
        s = float(np.max(extents / np.array(size)))
        grid, why = (s, s, s), f"auto: the largest extent ({extents.max():.0f} mm) over {max(size)} voxels"
    return Grid(tuple(round(v, 4) for v in grid), why)


def foreground_center(array: np.ndarray, affine: np.ndarray, threshold: float = -0.8) -> np.ndarray:
    """World centre (mm) of the bounding box of voxels above `threshold` (normalised units); the volume's centre
    when there are none."""
    mask = (array > threshold).any(axis=0)
    idx = np.argwhere(mask)
    mid = (idx.min(0) + idx.max(0)) / 2.0 if len(idx) else (np.array(mask.shape) - 1) / 2.0
    return affine[:3, :3] @ mid + affine[:3, 3]


def grid_affine(spacing, shape, center) -> np.ndarray:
    """Axis-aligned (RAS) affine of a grid of `shape` voxels of `spacing`, centred on `center` (world mm)."""
    out = np.eye(4)
    out[:3, :3] = np.diag(spacing)
    out[:3, 3] = np.asarray(center, float) - np.asarray(spacing, float) * (np.asarray(shape) - 1) / 2.0
    return out


def resample(array: np.ndarray, affine: np.ndarray, target: np.ndarray, shape, order: int = 1, cval: float = -1.0) -> np.ndarray:
    """(C, X, Y, Z) with voxel->world `affine` -> (C, *shape) on the grid of `target` (voxel->world)."""
    from scipy.ndimage import affine_transform, gaussian_filter

    m = np.linalg.inv(affine) @ target  # target voxel -> source voxel
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    dirs = affine[:3, :3] / zooms
    step = np.linalg.norm(np.diag(np.diag(target)[:3]) @ dirs, axis=0)  # target spacing along each source axis
    sigma = np.maximum(0.0, (step / zooms - 1.0) / 2.0) if order > 0 else np.zeros(3)
    out = np.empty((array.shape[0], *[int(s) for s in shape]), dtype=np.float32)
    for c, ch in enumerate(array):
        src = gaussian_filter(ch, sigma, mode="nearest") if sigma.max() > 0.05 else ch
        out[c] = affine_transform(src, m[:3, :3], m[:3, 3], output_shape=out.shape[1:], order=order, cval=cval, prefilter=False)
    return out


def resample_labels(seg: np.ndarray, affine: np.ndarray, target: np.ndarray, shape) -> np.ndarray:
    """A label map (*S) onto the grid of `target`: nearest neighbour, plus every labelled source voxel marks the
    target voxel its centre falls in (so small structures survive downsampling; labels say "present here")."""
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(affine) @ target
    out = affine_transform(seg.astype(np.float32), m[:3, :3], m[:3, 3], output_shape=[int(s) for s in shape], order=0, cval=0).astype(np.int64)
    idx = np.argwhere(seg > 0)
    if len(idx):
        to = np.linalg.inv(target) @ affine
        t = np.rint(idx @ to[:3, :3].T + to[:3, 3]).astype(int)
        inside = ((t >= 0) & (t < np.array(out.shape))).all(axis=1)
        t, vals = t[inside], seg[tuple(idx[inside].T)].astype(np.int64)
        np.maximum.at(out, tuple(t.T), vals)
    return out


def sample_affine(spacing, image_size, spatial_dims: int) -> np.ndarray:
    """The affine written with generated images: the target spacing, the field of view centred on the world origin
    (2D: x, y in-plane, z = slice thickness)."""
    size = list(image_size) + [1] * (3 - len(image_size))
    return grid_affine(list(spacing)[:3], size, (0.0, 0.0, 0.0))


def check_fits(extent_mm, block_mm, what: str) -> None:
    if any(e < b for e, b in zip(extent_mm, block_mm)):
        raise SynthError(f"{what} ({' x '.join(f'{e:.0f}' for e in extent_mm)} mm) is smaller than one block of "
                         f"{' x '.join(f'{b:.0f}' for b in block_mm)} mm: lower data.spacing or data.image_size")
