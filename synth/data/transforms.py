"""Per-subject preprocessing (intensity preset -> resampling onto the target grid, or fitting to image_size ->
2D slicing) and train-time augmentation.

`Preprocess` turns one decoded `Volume` into a stack of model-ready items `(N, C, *image_size)` in [-1, 1]
plus their output spacing; it is a plain picklable object whose `config()` keys the disk cache.
`Augment` wraps torchio transforms for channel-first 2D or 3D tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synth.data.geometry import Grid, foreground_center, grid_affine, resample, resample_labels, world_extent
from synth.data.intensity import Intensity, looks_like_ct
from synth.data.readers import Volume
from synth.errors import SynthError

@dataclass
class Processed:
    """Items of one subject, ready to cache."""

    items: np.ndarray  # float32 (N, C, *image_size) in [-1, 1]; one volume in 3D: (1, C, *whole grid)
    spacing: list[float]  # mm per output spatial axis
    thickness: float  # mm along the slicing axis (2D items from 3D volumes), else 1.0
    channel_names: list[str]
    origin: list[float]
    source_format: str = "nifti"  # see Volume.source_format
    seg_labels: np.ndarray | None = None  # per item: 1 if the segmentation marks anything in it, else 0
    notes: list[tuple[str, str]] | None = None  # (kind, message) warnings about this subject's values
    affine: list | None = None  # voxel -> world (mm) of the volume the items were cut from (resampled grid), if known
    index: list[int] | None = None  # 2D from 3D: the slice (last-axis) index of each item in that volume
    seg: np.ndarray | None = None  # whole=True in 3D: the segmentation on the volume's grid (per-block labels)
    masks: np.ndarray | None = None  # data.masks=true: uint8 (N, 1, *image_size) lesion masks (seg > 0) of the items


def lesion(seg: np.ndarray) -> np.ndarray:
    """The mask served with data.masks=true: every label above 0 of a label map, as uint8 0/1 (one definition for
    whole items, 2D slices and blocks; generate.py's mask files are read the same way)."""
    return (np.asarray(seg) > 0).astype(np.uint8)


def slice_index(array: np.ndarray, slice_range, step: int, use_all: bool = False) -> np.ndarray:
    """Indices along the last axis within `slice_range` of the foreground (> -1) extent."""
    n = array.shape[-1]
    if use_all:
        return np.arange(0, n, step)
    fg = np.nonzero((array > -1.0 + 1e-3).any(axis=tuple(range(array.ndim - 1))))[0]
    lo, hi = (fg[0], fg[-1] + 1) if len(fg) else (0, n)
    a = lo + int(np.floor(slice_range[0] * (hi - lo)))
    b = max(a + 1, lo + int(np.ceil(slice_range[1] * (hi - lo))))
    return np.arange(a, min(b, n), step)


def value_notes(intensity: Intensity, array: np.ndarray, name: str) -> list[tuple[str, str]]:
    """Warnings about a subject's source values under the chosen intensity preset."""
    notes = []
    far = intensity.outside(array)
    if far is not None:
        lo, hi = intensity.range
        notes.append(("outside", f"subject {name}: {far[0]:.1%} of its values lie far outside the range [{lo:g}, {hi:g}] of "
                                 f"data.intensity={intensity.name} (min {far[1]:g}, max {far[2]:g}) and are clipped: "
                                 "pick a preset that fits (e.g. data.intensity=percentile)"))
    if intensity.kind == "percentile" and intensity.detected and looks_like_ct(array):
        notes.append(("ct", f"subject {name} looks like CT in Hounsfield units (air near -1000): percentile scaling flattens "
                            "brain contrast; set data.intensity=ct_brain (or ct_soft_tissue, ct_bone, ct)"))
    return notes


class Preprocess:
    """Map intensities, resample NIfTI onto the target grid (synth.data.geometry) or fit each item to image_size,
    and slice 3D volumes for 2D data. `intensity` and `grid` may be set after construction (the DataModule
    resolves `auto` from the files)."""

    def __init__(self, spatial_dims: int, image_size, resize: str, intensity: Intensity | None, grid: Grid | None,
                 slice_range, slice_step: int, masks: bool = False):
        self.spatial_dims = spatial_dims
        self.image_size = [int(s) for s in image_size]
        self.resize = resize
        self.intensity = intensity
        self.grid = grid
        self.slice_range = [float(v) for v in slice_range]
        self.slice_step = int(slice_step)
        self.masks = bool(masks)  # also cut each item's mask (seg > 0) with the same geometry

    def config(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k not in ("intensity", "grid")}
        out["intensity"] = None if self.intensity is None else self.intensity.to_meta()
        out["grid"] = None if self.grid is None else list(self.grid.spacing)
        return out

    def fit(self, item: np.ndarray, name: str) -> np.ndarray:
        """One item (C, *S) -> (C, *image_size) with MONAI array transforms."""
        from monai.transforms import Resize, ResizeWithPadOrCrop

        size = self.image_size
        if list(item.shape[1:]) == size:
            return item
        if self.resize == "none":
            raise SynthError(f"subject {name} has shape {list(item.shape[1:])}, not data.image_size={size}, and data.resize=none: set data.resize=resize or crop_pad")
        if self.resize == "crop_pad":
            t = ResizeWithPadOrCrop(size, mode="constant", value=-1.0)
        else:
            down = all(o <= i for o, i in zip(size, item.shape[1:]))
            mode = "area" if down else ("bilinear" if self.spatial_dims == 2 else "trilinear")
            t = Resize(size, mode=mode, **({} if down else {"align_corners": False}))
        out = t(torch.from_numpy(item))
        return np.clip(np.asarray(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=np.float32), -1.0, 1.0)

    def fit_mask(self, mask: np.ndarray) -> np.ndarray:
        """One mask (1, *S) -> (1, *image_size) as its image went (nearest neighbour; padding is background)."""
        from monai.transforms import Resize, ResizeWithPadOrCrop

        if list(mask.shape[1:]) == self.image_size:
            return mask
        t = ResizeWithPadOrCrop(self.image_size, mode="constant", value=0) if self.resize == "crop_pad" else Resize(self.image_size, mode="nearest")
        out = t(torch.from_numpy(mask.astype(np.float32)))
        return (np.asarray(out.as_tensor() if hasattr(out, "as_tensor") else out) > 0.5).astype(np.uint8)

    def _check_mask(self, seg, arr: np.ndarray, name: str):
        """The segmentation, or None when it cannot serve (no file, other grid); with data.masks=true that is refused."""
        if seg is not None and tuple(seg.shape) != tuple(arr.shape[1:]):
            if self.masks:
                raise SynthError(f"subject {name}: its mask has shape {list(seg.shape)} but its image {list(arr.shape[1:])}: "
                                 "give a mask on the image's grid, or set data.masks=false")
            return None
        if seg is None and self.masks:
            raise SynthError(f"subject {name} has no mask but data.masks=true: add its mask file (BraTS seg, the CSV mask column, "
                             "data.source.mask_dir) or set data.masks=false")
        return seg

    def _resample(self, arr: np.ndarray, seg, affine: np.ndarray, whole: bool):
        """Onto the target grid: 3D image_size around the foreground (whole: the volume's full extent); 2D: image_size
        in-plane around the foreground, every slice of the volume's z-extent."""
        spacing = np.array(self.grid.spacing)
        extent = world_extent(affine, arr.shape[1:])
        center = (affine[:3, :3] @ ((np.array(arr.shape[1:]) - 1) / 2.0)) + affine[:3, 3]
        if self.spatial_dims == 3 and whole:
            shape = [max(1, int(round(e / s))) for e, s in zip(extent, spacing)]
        else:
            fg = foreground_center(arr, affine)
            if self.spatial_dims == 3:
                shape, center = self.image_size, fg
            else:
                shape = [*self.image_size, max(1, int(round(extent[2] / spacing[2])))]
                center = np.array([fg[0], fg[1], center[2]])
        target = grid_affine(spacing, shape, center)
        out = resample(arr, affine, target, shape)
        seg = None if seg is None else resample_labels(seg, affine, target, shape)
        return np.clip(out, -1.0, 1.0), seg, target

    def __call__(self, vol: Volume, name: str, whole: bool = False) -> Processed:
        if self.intensity is None:
            raise SynthError("internal: Preprocess has no intensity map yet (the DataModule sets it in setup)")
        arr = np.asarray(vol.array, dtype=np.float32)
        spatial = arr.ndim - 1
        if spatial not in (2, 3):
            raise SynthError(f"subject {name} has {spatial} spatial dimensions: use 2D or 3D images")
        if spatial == 2 and self.spatial_dims == 3:
            raise SynthError(f"subject {name} is a 2D image but data.spatial_dims=3: set data.spatial_dims=2")
        notes = value_notes(self.intensity, arr, name)
        arr = self.intensity.forward(arr, name)
        spacing = [float(s) for s in vol.spacing][:spatial]
        seg = self._check_mask(None if vol.seg is None else np.asarray(vol.seg), arr, name)
        resampled = self.grid is not None and vol.affine is not None and spatial == 3
        affine = None if vol.affine is None else np.asarray(vol.affine)
        if resampled:
            arr, seg, affine = self._resample(arr, seg, vol.affine, whole)
            spacing = list(self.grid.spacing)
        thickness, index = 1.0, None
        if self.spatial_dims == 2 and spatial == 3:
            thickness = spacing[2]
            spacing = spacing[:2]
            idx = slice_index(arr, self.slice_range, self.slice_step)
            index = [int(i) for i in idx]
            items = np.ascontiguousarray(np.moveaxis(arr[..., idx], -1, 0))
            seg_labels = None if seg is None else (seg[..., idx] > 0).any(axis=(0, 1)).astype(np.int64)
            masks = None if not self.masks else np.ascontiguousarray(np.moveaxis(lesion(seg[..., idx]), -1, 0)[:, None])
        else:
            items = arr[None]
            seg_labels = None if seg is None else np.array([int((seg > 0).any())], dtype=np.int64)
            masks = None if not self.masks else lesion(seg)[None, None]
        if not resampled and not (whole and self.spatial_dims == 3):
            in_shape = items.shape[2:]
            items = np.stack([self.fit(it, name) for it in items]).astype(np.float32, copy=False)
            masks = None if masks is None else np.stack([self.fit_mask(m) for m in masks])
            if self.resize == "resize":
                spacing = [s * n / o for s, n, o in zip(spacing, in_shape, self.image_size)]
        origin = [float(o) for o in (vol.origin or (0.0, 0.0, 0.0))]
        keep_seg = seg if (whole and self.spatial_dims == 3 and seg is not None) else None
        return Processed(items, spacing, thickness, list(vol.channel_names), (origin + [0.0] * 3)[:3], vol.source_format, seg_labels,
                         notes, None if affine is None else np.asarray(affine).tolist(), index, keep_seg,
                         None if keep_seg is not None else masks)


class Augment:
    """Apply torchio transforms to one channel-first item (C,*S); 2D gets a trailing singleton axis. Re-clipped to [-1, 1]."""

    def __init__(self, transforms: list):
        import torchio as tio

        self.transform = tio.Compose(list(transforms)) if transforms else None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return image
        flat = image.ndim == 3
        x = image.unsqueeze(-1) if flat else image
        x = self.transform(x)
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
        return (x.squeeze(-1) if flat else x).clamp(-1.0, 1.0).contiguous()
