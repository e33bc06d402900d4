"""Reading a folder of synthetic images back into an (N, C, *S) array in [-1, 1]: the NIfTI / PNG files that
generate.py writes (sample_*.nii.gz, sample_*.png), or any folder of NIfTI / PNG / JPG / TIFF images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synth.errors import SynthError

SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthError(f"samples={folder} is not a folder: pass the folder generate.py wrote (<run>/samples/<time>) or one of NIfTI/PNG images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.startswith("."))
    generated = [p for p in files if p.name.startswith("sample_")]
    files = generated or [p for p in files if p.name != "grid.png"]
    if not files:
        raise SynthError(f"samples={folder} holds no NIfTI/PNG images: generate some first (python generate.py run_dir=<run> n=64)")
    return files


def _read(path: Path, spatial_dims: int) -> np.ndarray:
    if path.name.lower().endswith((".nii.gz", ".nii")):
        import nibabel as nib

        arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
        if spatial_dims == 2:  # save_nifti writes 2D as (X, Y, 1[, C])
            if arr.ndim >= 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
        else:
            arr = arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)
        return arr
    from PIL import Image

    arr = np.asarray(Image.open(path), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr[..., :3], -1, 0)
    return arr / 127.5 - 1.0


def _percentile_normalize(img: np.ndarray) -> np.ndarray:
    out = np.empty_like(img)
    for c, ch in enumerate(img):
        lo, hi = np.percentile(ch, [0.5, 99.5])
        out[c] = np.clip((ch - lo) / max(hi - lo, 1e-8) * 2 - 1, -1, 1)
    return out


def read_samples(folder: Path, shape: tuple[int, ...], normalize: bool = False) -> tuple[np.ndarray, dict | None]:
    """All images of `folder` as (N, *shape) float32 in [-1, 1], and its samples.json (cost) if there is one.
    `shape` is the real data's (C, *S); a file of another shape or outside [-1, 1] is refused."""
    folder = Path(folder)
    spatial_dims = len(shape) - 1
    images = []
    for path in list_images(folder):
        img = _read(path, spatial_dims)
        if tuple(img.shape) != tuple(shape):
            raise SynthError(
                f"{path.name} has shape {list(img.shape)} (channels first) but the real data has {list(shape)}: "
                "compare samples with the data config they were generated for (same data.spatial_dims, data.image_size, data.channels)"
            )
        if normalize:
            img = _percentile_normalize(img)
        elif img.min() < -1.001 or img.max() > 1.001:
            raise SynthError(
                f"{path.name} has intensities in [{img.min():.3g}, {img.max():.3g}], not [-1, 1] as synth writes them: "
                "pass normalize_samples=true to map each image's 0.5-99.5th percentiles to [-1, 1] like the real data"
            )
        images.append(img.astype(np.float32))
    info_path = folder / "samples.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    return np.stack(images), info
