"""Writing images with their geometry: NIfTI (spacing/affine from the data, optionally a JSON note in a header
extension, e.g. the intensity preset of samples written in source units), PNG for RGB 2D data, and PNG grids
for looking at many samples at once (mid axial slices for 3D). Every write is atomic."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
from PIL import Image

from synth.errors import SynthError


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def partial_path(path: Path) -> Path:
    """The hidden temp file a write of `path` fills first: unique per process, ending in the same suffixes (writers
    that go by the extension, e.g. nibabel's .nii.gz, still work). A kill may leave it behind; it is never read."""
    suffixes = "".join(path.suffixes)
    return path.with_name(f".{path.name[:len(path.name) - len(suffixes)]}.{os.getpid()}.partial{suffixes}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], fsync: bool = True) -> Path:
    """synth's one atomic writer (images, grids, caches, checkpoints): `write(tmp)` fills a hidden temp file in the
    same folder (named with its suffixes, so writers that go by the extension work), which is fsynced and renamed over
    `path`, then the folder is fsynced: readers and a kill see the old complete file or the new one, never half.
    A full disk becomes a SynthError that names the folder; the previous file is left intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise SynthError(f"no space left on the disk of {path.parent} while writing {path.name} ({os.strerror(err.errno)}): "
                             "free space there (or move outputs/ with PROJECT_ROOT=<a larger disk>); earlier files are intact") from None
        raise
    if fsync:
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # some filesystems cannot fsync a directory
            pass
    return path


def affine_from_meta(meta: dict, spatial_dims: int) -> np.ndarray:
    """4x4 affine of the output images: the data's (after resizing) or diag(spacing)."""
    if meta.get("affine") is not None:
        return np.asarray(meta["affine"], dtype=np.float64)
    spacing = list(meta.get("spacing") or [1.0] * spatial_dims)
    return np.diag([*spacing, *[1.0] * (3 - len(spacing)), 1.0])


def save_nifti(image: np.ndarray, path: Path, affine: np.ndarray, note: dict | None = None) -> Path:
    """`image` is (C, X, Y) or (C, X, Y, Z) float; written as X,Y[,Z][,C] float32 (2D gets a singleton Z). `note`
    (JSON-serialisable) is stored in a NIfTI comment extension, read back by `read_note`."""
    data = np.asarray(image, dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    data = np.moveaxis(data, 0, -1)  # channels last, as NIfTI stores them
    if data.shape[-1] == 1:
        data = data[..., 0]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    if note is not None:
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps({"synth": note}).encode()))
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def read_note(path: Path) -> dict | None:
    """The `note` save_nifti stored in a NIfTI file, or None (other files, or none stored)."""
    try:
        exts = nib.load(str(path)).header.extensions
    except Exception:
        return None
    for ext in exts:
        if ext.get_code() == 6:  # comment
            try:
                found = json.loads(ext.get_content())
            except (ValueError, TypeError):
                continue
            if isinstance(found, dict) and isinstance(found.get("synth"), dict):
                return found["synth"]
    return None


def to_uint8(image: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    lo, hi = value_range
    return (np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: Path) -> Path:
    """`image` (C, H, W) in [-1, 1]; C = 1 (grey) or 3 (RGB), rows = H as the source PNG had them."""
    arr = to_uint8(image)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def display_plane(image: np.ndarray, volume_axes: bool) -> np.ndarray:
    """(C, *S) -> (C, rows, cols) for display: mid axial slice for 3D; NIfTI axes (x, y) turned so that
    anterior is up and patient right is on the right (neurological view)."""
    img = np.asarray(image)
    if img.ndim == 4:
        img = img[..., img.shape[-1] // 2]
    if volume_axes:
        img = np.flip(np.swapaxes(img, 1, 2), axis=1)
    return img


def image_grid(images: np.ndarray, volume_axes: bool = True, rgb: bool = False, pad: int = 2) -> np.ndarray:
    """(N, C, *S) in [-1, 1] -> uint8 grid (rows, cols) or (rows, cols, 3); first channel unless rgb."""
    planes = [display_plane(im, volume_axes) for im in images]
    planes = [p[:3] if rgb and p.shape[0] >= 3 else p[:1] for p in planes]
    n = len(planes)
    ncol = int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    c, h, w = planes[0].shape
    grid = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), -1.0, dtype=np.float32)
    for i, p in enumerate(planes):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = p
    out = to_uint8(grid)
    return out[0] if c == 1 else np.moveaxis(out, 0, -1)


def save_grid(images: np.ndarray, path: Path, volume_axes: bool = True, rgb: bool = False, scale: int = 2) -> Path:
    return save_grid_image(image_grid(images, volume_axes=volume_axes, rgb=rgb), path, scale)


def save_grid_image(grid: np.ndarray, path: Path, scale: int = 2) -> Path:
    """A uint8 grid from `image_grid` as PNG, enlarged `scale` times (nearest neighbour)."""
    grid = Image.fromarray(grid)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def is_rgb(meta: dict) -> bool:
    return [c.upper() for c in meta.get("channel_names", [])][:3] == ["R", "G", "B"]


def is_volume_axes(meta: dict) -> bool:
    """True when arrays follow NIfTI axes (x, y[, z]); False for images read from PNG/JPG/TIFF (rows, cols)."""
    return meta.get("source_format", "nifti") == "nifti"
