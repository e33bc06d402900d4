"""Decoding files and the records sources hand over: `Subject` (a unit of the split), `Volume` (a decoded
subject) and `Header` (what a file says about itself without decoding its pixels).

NIfTI is reoriented to the closest canonical RAS, so arrays are (C, x, y[, z]) and `Volume.affine` maps their
voxels to world mm (an oblique acquisition stays oblique there; synth.data.geometry resamples it onto a
world-aligned grid). PNG/JPG/TIFF are (C, rows, cols) in pixels. Unreadable files raise a SynthError naming
the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.errors import SynthError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + PIL_SUFFIXES
PIL_8BIT = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")


@dataclass
class Subject:
    """One unit of the split (a patient, an image file, or a block of one volume)."""

    id: str
    label: int | None = None
    paths: list[Path] | None = None  # one per channel; None for generated / in-memory sources
    extra: dict = field(default_factory=dict)
    split: str | None = None  # train | val | test when the source assigns it (blocks of one volume), else None
    group: str | None = None  # subject key shared by files of one patient / slide (split together), else None


@dataclass
class Volume:
    """A decoded subject at native resolution."""

    array: np.ndarray  # float32 (C, *S)
    spacing: tuple[float, ...]  # mm per spatial axis
    channel_names: list[str]
    seg: np.ndarray | None = None  # int (*S)
    origin: tuple[float, ...] | None = None  # world position (mm) of voxel 0, when known
    source_format: str = "nifti"  # nifti: axes are RAS (x, y[, z]); image: PNG/JPG/TIFF rows, cols
    affine: np.ndarray | None = None  # 4x4 voxel -> world (mm) of `array`, when known (NIfTI)


@dataclass
class Header:
    """A file's geometry and type from its header (no pixel decode)."""

    path: Path
    kind: str  # nifti | image
    shape: tuple[int, ...]  # spatial shape as synth decodes it (canonical RAS for NIfTI; rows, cols for images)
    channels: int
    dtype: str
    spacing: tuple[float, ...]  # mm (NIfTI) or 1.0 per pixel
    affine: np.ndarray | None = None  # canonical voxel -> world (NIfTI)
    orientation: str = ""  # the file's own axis codes, e.g. LPS (NIfTI) or the PIL mode (images)
    ndim: int = 0  # dimensions stored in the file (4: a 4th axis read as channels)
    oblique: bool = False

    @property
    def eight_bit(self) -> bool:
        return self.kind == "image" and self.dtype in PIL_8BIT


# ---------------------------------------------------------------------------------------- readers
def why(err: Exception) -> str:
    """An exception as a short one-line reason (decoders put file offsets and newlines in their messages)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:120]}{'...' if len(text) > 120 else ''}" if text else type(err).__name__


def unreadable(what: str, path: Path, err: Exception) -> SynthError:
    """The one-line error for a file that cannot be read, with the fix that fits the cause (decoders such as nibabel
    turn a permission error into their own "could not read", so the file is probed again here)."""
    if not isinstance(err, PermissionError):
        try:
            open(path, "rb").close()
        except PermissionError as denied:
            err = denied
        except OSError:
            pass
    if isinstance(err, PermissionError):
        return SynthError(f"cannot read {what} {path}: permission denied; fix its permissions (chmod u+r {path}) or move it out of the data")
    return SynthError(f"cannot read {what} {path} ({why(err)}): replace or remove the corrupt file")


def stem(path: Path) -> str:
    """File name without its image suffix (handles .nii.gz)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many types for truncated/garbled files
        raise unreadable("NIfTI", path, e) from e


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Decode a NIfTI to canonical RAS: (array (C,X,Y,Z) float32, spacing, origin, affine)."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(_load_nifti(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except SynthError:
        raise
    except Exception as e:
        raise unreadable("NIfTI", path, e) from e
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
    affine = np.asarray(img.affine, dtype=np.float64)
    return np.ascontiguousarray(data), zooms, tuple(float(v) for v in affine[:3, 3]), affine


def pil_channels(path: Path) -> int:
    """Channel count of a PNG/JPG/TIFF from its header (no pixel decode)."""
    return read_header(path).channels


def read_header(path: Path) -> Header:
    """What synth will see in a file, from its header only."""
    path = Path(path)
    if is_nifti(path):
        import nibabel as nib

        img = _load_nifti(path)
        can = nib.as_closest_canonical(img)
        shape = tuple(int(s) for s in can.shape)
        spatial = (shape + (1, 1, 1))[:3]
        zooms = tuple(float(z) for z in (tuple(can.header.get_zooms()[:3]) + (1.0, 1.0, 1.0))[:3])
        rot = img.affine[:3, :3] / np.maximum(np.linalg.norm(img.affine[:3, :3], axis=0), 1e-12)
        oblique = bool(np.abs(np.abs(rot) - np.round(np.abs(rot))).max() > 1e-3)
        return Header(path, "nifti", spatial, shape[3] if len(shape) == 4 else 1, str(img.get_data_dtype()), zooms,
                      np.asarray(can.affine, dtype=np.float64), "".join(nib.aff2axcodes(img.affine)), len(shape), oblique)
    if path.name.lower().endswith(PIL_SUFFIXES):
        from PIL import Image

        try:
            with Image.open(path) as im:
                mode, (w, h) = im.mode, im.size
        except Exception as e:
            raise unreadable("image", path, e) from e
        channels = 3 if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else 1
        return Header(path, "image", (h, w), channels, mode, (1.0, 1.0), None, mode, 2 if channels == 1 else 3)
    raise SynthError(f"unsupported file type {path}: use .nii/.nii.gz/.png/.jpg/.tif files")


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
        raise unreadable("image", path, e) from e
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def read_image(path: Path) -> Volume:
    """Decode any supported file into a Volume (channel names ch0.., or R, G, B)."""
    path = Path(path)
    if is_nifti(path):
        arr, spacing, origin, affine = read_nifti(path)
        return Volume(arr, spacing, [f"ch{i}" for i in range(arr.shape[0])], origin=origin, affine=affine)
    if path.name.lower().endswith(PIL_SUFFIXES):
        arr = read_pil(path)
        names = ["R", "G", "B"] if arr.shape[0] == 3 else [f"ch{i}" for i in range(arr.shape[0])]
        return Volume(arr, (1.0, 1.0), names, origin=(0.0, 0.0), source_format="image")
    raise SynthError(f"unsupported file type {path}: use .nii/.nii.gz/.png/.jpg/.tif files")


def _stack(subject: Subject, names: list[str] | None = None) -> Volume:
    """Read each of a subject's channel files and stack them (shapes must agree)."""
    vols = [read_image(p) for p in subject.paths]
    shapes = {v.array.shape[1:] for v in vols}
    if len(shapes) > 1:
        raise SynthError(f"subject {subject.id} has channel files of different shapes {sorted(shapes)}: resample them to one grid")
    arr = np.concatenate([v.array for v in vols], axis=0)
    if names is None:
        names = [n for v in vols for n in v.channel_names] if len(vols) == 1 else [f"ch{i}" for i in range(arr.shape[0])]
    v0 = vols[0]
    return Volume(arr, v0.spacing, names, origin=v0.origin, source_format=v0.source_format, affine=v0.affine)


def first_image(root: Path) -> Path | None:
    """The first image file (sorted, any depth) under a folder, or None."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    return next((p for p in sorted(root.rglob("*")) if is_image(p)), None)


def detect_channels(location) -> int:
    """data.channels for `channels: ${channels_of:${data.root}}`: the channel count of the first image under a folder,
    or of the rows of a CSV data list (Channel_ columns, or the first file's own channels). 1 when nothing can be
    read yet: the source then reports what is missing, in one line."""
    if location in (None, "", "???"):
        return 1
    path = Path(str(location)).expanduser()
    try:
        if path.is_file() and path.suffix.lower() == ".csv":
            import pandas as pd

            df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=1)
            cols = [c.strip() for c in df.columns if c.strip().startswith("Channel_")]
            if len(cols) != 1 or df.empty:
                return max(1, len(cols))
            first = Path(str(df[cols[0]].iloc[0]).strip()).expanduser()
            return read_header(first if first.is_absolute() else path.parent / first).channels
        first = first_image(path)
        return 1 if first is None else read_header(first).channels
    except (SynthError, OSError, ValueError):
        return 1
