"""Decoding files and the records sources hand over: `Subject` (a unit of the split) and `Volume` (a decoded
subject). NIfTI is reoriented to canonical RAS, so arrays are (C, x, y[, z]); PNG/JPG/TIFF are (C, rows, cols).
Unreadable files raise a SynthError that names the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.errors import SynthError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + PIL_SUFFIXES


@dataclass
class Subject:
    """One independent unit of the split (a patient, an image file, or an MNI152 block)."""

    id: str
    label: int | None = None
    paths: list[Path] | None = None  # one per channel; None for generated / in-memory sources
    extra: dict = field(default_factory=dict)
    split: str | None = None  # train | val | test when the source assigns it (blocks of one volume), else None


@dataclass
class Volume:
    """A decoded subject at native resolution."""

    array: np.ndarray  # float32 (C, *S)
    spacing: tuple[float, ...]  # mm per spatial axis
    channel_names: list[str]
    seg: np.ndarray | None = None  # int (*S)
    origin: tuple[float, ...] | None = None  # world position (mm) of voxel 0, when known
    source_format: str = "nifti"  # nifti: axes are RAS (x, y[, z]); image: PNG/JPG/TIFF rows, cols


# ---------------------------------------------------------------------------------------- readers
def why(err: Exception) -> str:
    """An exception as a short one-line reason (decoders put file offsets and newlines in their messages)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:120]}{'...' if len(text) > 120 else ''}" if text else type(err).__name__


def stem(path: Path) -> str:
    """File name without its image suffix (handles .nii.gz)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Decode a NIfTI to canonical RAS: returns (array (C,X,Y,Z) float32, spacing, origin)."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises many types for truncated/garbled files
        raise SynthError(f"cannot read NIfTI {path} ({why(e)}): replace or remove the corrupt file") from e
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:  # (X,Y,Z,C) multi-channel NIfTI
        data = np.moveaxis(data, -1, 0)
    else:
        raise SynthError(f"NIfTI {path} has {data.ndim} dimensions: use 3D (or 4D with channels last) files")
    zooms = (zooms + (1.0, 1.0, 1.0))[:3]
    return np.ascontiguousarray(data), zooms, tuple(float(v) for v in img.affine[:3, 3])


def pil_channels(path: Path) -> int:
    """Channel count of a PNG/JPG/TIFF from its header (no pixel decode)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return 3 if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else 1
    except Exception as e:
        raise SynthError(f"cannot read image {path} ({why(e)}): replace or remove the corrupt file") from e


def read_pil(path: Path) -> np.ndarray:
    """Decode a PNG/JPG/TIFF to (C,H,W) float32: grayscale -> 1 channel, colour -> 3 (RGB, alpha dropped)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "P", "CMYK", "YCbCr"):
                im = im.convert("RGB")
            elif im.mode in ("LA", "1"):
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.float32)
    except Exception as e:
        raise SynthError(f"cannot read image {path} ({why(e)}): replace or remove the corrupt file") from e
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def read_image(path: Path) -> Volume:
    """Decode any supported file into a Volume (channel names ch0..)."""
    name = path.name.lower()
    fmt = "nifti"
    if name.endswith(NIFTI_SUFFIXES):
        arr, spacing, origin = read_nifti(path)
    elif name.endswith(PIL_SUFFIXES):
        arr, spacing, origin = read_pil(path), (1.0, 1.0), (0.0, 0.0)
        fmt = "image"
    else:
        raise SynthError(f"unsupported file type {path}: use .nii/.nii.gz/.png/.jpg/.tif files")
    names = ["R", "G", "B"] if (arr.shape[0] == 3 and not name.endswith(NIFTI_SUFFIXES)) else [f"ch{i}" for i in range(arr.shape[0])]
    return Volume(arr, spacing, names, origin=origin, source_format=fmt)


def _stack(subject: Subject, names: list[str] | None = None) -> Volume:
    """Read each of a subject's channel files and stack them (shapes must agree)."""
    vols = [read_image(p) for p in subject.paths]
    shapes = {v.array.shape[1:] for v in vols}
    if len(shapes) > 1:
        raise SynthError(f"subject {subject.id} has channel files of different shapes {sorted(shapes)}: resample them to one grid")
    arr = np.concatenate([v.array for v in vols], axis=0)
    if names is None:
        names = [n for v in vols for n in v.channel_names] if len(vols) == 1 else [f"ch{i}" for i in range(arr.shape[0])]
    return Volume(arr, vols[0].spacing, names, origin=vols[0].origin, source_format=vols[0].source_format)
