"""Per-subject preprocessing (normalise -> 2D slicing -> fit to image_size) and train-time augmentation.

`Preprocess` turns one decoded `Volume` into a stack of model-ready items `(N, C, *image_size)` in
[-1, 1] plus their output spacing; it is a plain picklable object whose `config()` keys the disk cache.
`Augment` wraps torchio transforms for channel-first 2D or 3D tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synth.data.readers import Volume
from synth.errors import SynthError

PERCENTILES = (0.5, 99.5)


@dataclass
class Processed:
    """Items of one subject, ready to cache."""

    items: np.ndarray  # float32 (N, C, *image_size) in [-1, 1]
    spacing: list[float]  # mm per output spatial axis
    thickness: float  # mm along the slicing axis (2D items from 3D volumes), else 1.0
    channel_names: list[str]
    origin: list[float]
    source_format: str = "nifti"  # see Volume.source_format
    seg_labels: np.ndarray | None = None  # per item: 1 if the segmentation marks anything in it, else 0


def normalize(array: np.ndarray, mode: str, intensity_range=None, name: str = "") -> np.ndarray:
    """Per channel: `percentile` maps the 0.5th/99.5th percentile to -1/1, `fixed` maps intensity_range; clipped."""
    if not np.isfinite(array).all():
        raise SynthError(f"subject {name} has NaN/inf voxels: fix or remove that image")
    out = np.empty_like(array, dtype=np.float32)
    for c, ch in enumerate(array):
        if mode == "percentile":
            lo, hi = np.percentile(ch, PERCENTILES)
            if hi <= lo:
                lo, hi = float(ch.min()), float(ch.max())
        else:
            lo, hi = intensity_range
        if hi <= lo:
            raise SynthError(f"subject {name} channel {c} is constant ({lo:g}): remove that image from the data (constant images are an error, not skipped)")
        out[c] = np.clip((ch - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
    return out


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


def axial_slices(array: np.ndarray, slice_range, step: int, use_all: bool = False) -> np.ndarray:
    """Slices along the last axis within `slice_range` of the foreground (> -1) extent -> (N, C, X, Y)."""
    idx = slice_index(array, slice_range, step, use_all)
    return np.ascontiguousarray(np.moveaxis(array[..., idx], -1, 0))


class Preprocess:
    """Normalise a Volume, slice it to 2D if asked, and bring every item to `image_size`."""

    def __init__(self, spatial_dims: int, image_size, resize: str, normalize: str, intensity_range, slice_range, slice_step: int):
        self.spatial_dims = spatial_dims
        self.image_size = [int(s) for s in image_size]
        self.resize = resize
        self.normalize = normalize
        self.intensity_range = None if intensity_range is None else [float(v) for v in intensity_range]
        self.slice_range = [float(v) for v in slice_range]
        self.slice_step = int(slice_step)

    def config(self) -> dict:
        return dict(vars(self))

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

    def __call__(self, vol: Volume, name: str, presliced: bool = False) -> Processed:
        arr = np.asarray(vol.array, dtype=np.float32)
        spatial = arr.ndim - 1
        if spatial not in (2, 3):
            raise SynthError(f"subject {name} has {spatial} spatial dimensions: use 2D or 3D images")
        if spatial == 2 and self.spatial_dims == 3:
            raise SynthError(f"subject {name} is a 2D image but data.spatial_dims=3: set data.spatial_dims=2")
        arr = normalize(arr, self.normalize, self.intensity_range, name)
        spacing = [float(s) for s in vol.spacing][:spatial]
        thickness = 1.0
        seg = None if vol.seg is None else np.asarray(vol.seg)
        if self.spatial_dims == 2 and spatial == 3:
            thickness = spacing[2]
            spacing = spacing[:2]
            idx = slice_index(arr, self.slice_range, self.slice_step, use_all=presliced)
            items = np.ascontiguousarray(np.moveaxis(arr[..., idx], -1, 0))
            seg_labels = None if seg is None else (seg[..., idx] > 0).any(axis=(0, 1)).astype(np.int64)
        else:
            items = arr[None]
            seg_labels = None if seg is None else np.array([int((seg > 0).any())], dtype=np.int64)
        in_shape = items.shape[2:]
        items = np.stack([self.fit(it, name) for it in items]).astype(np.float32, copy=False)
        if self.resize == "resize":
            spacing = [s * n / o for s, n, o in zip(spacing, in_shape, self.image_size)]
        origin = [float(o) for o in (vol.origin or (0.0, 0.0, 0.0))]
        return Processed(items, spacing, thickness, list(vol.channel_names), (origin + [0.0] * 3)[:3], vol.source_format, seg_labels)


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
