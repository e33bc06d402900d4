"""Reading a folder of synthetic images back into an (N, C, *S) array in [-1, 1]: the NIfTI / PNG files that
generate.py writes (sample_*.nii.gz, sample_*.png), or any folder of NIfTI / PNG / JPG / TIFF images.

Files are decoded by the data readers (synth.data.readers: NIfTI to canonical RAS, PNG/TIFF to channels first)
and mapped by the data's intensity presets (synth.data.intensity): samples written in source units (HU for the
CT presets, 0..255 for 8-bit) carry their preset in the file and are mapped forward with it, so metrics see the
same [-1, 1] as the real images; 8-bit PNG/JPG/TIFF are read as the uint8 preset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synth.data.intensity import Intensity, from_meta, preset, read_sample_units
from synth.data.readers import PIL_SUFFIXES, is_nifti, read_nifti, read_pil
from synth.errors import SynthError

SUFFIXES = (".nii.gz", ".nii") + PIL_SUFFIXES


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


def _read(path: Path, spatial_dims: int, normalize: bool, units: Intensity | None) -> np.ndarray:
    """One file as (C, *S): in [-1, 1] when it carries a preset, when `units` (the data's invertible preset) says
    it is in source units, or with `normalize`; else its raw values (NIfTI) or 8-bit values mapped by the uint8
    preset (PNG/JPG/TIFF)."""
    if is_nifti(path):
        arr = read_nifti(path)[0]
        if spatial_dims == 2 and arr.shape[-1] == 1:  # save_nifti writes 2D as (X, Y, 1[, C])
            arr = arr[..., 0]
        mapped = read_sample_units(path, arr)
        if mapped is not None:
            return mapped
        if units is not None and not normalize:
            return units.forward(arr, path.name)
    else:
        arr = read_pil(path)
        if not normalize:
            if arr.min() < 0 or arr.max() > 255:
                raise SynthError(f"{path.name} holds values in [{arr.min():.3g}, {arr.max():.3g}], not 8-bit: "
                                 "pass normalize_samples=true to map each image's 0.5-99.5th percentiles to [-1, 1] like the real data")
            return preset("uint8").forward(arr, path.name)
    return preset("percentile").forward(arr, path.name) if normalize else arr


def read_samples(folder: Path, shape: tuple[int, ...], normalize: bool = False, meta: dict | None = None) -> tuple[np.ndarray, dict | None]:
    """All images of `folder` as (N, *shape) float32 in [-1, 1], and its samples.json (cost) if there is one.
    `shape` is the real data's (C, *S); a file of another shape or outside [-1, 1] is refused. `meta` (the real
    data's data_meta) with an invertible preset (e.g. ct_brain) reads NIfTI files that carry no preset of their own
    as source units (images made elsewhere, in HU)."""
    folder = Path(folder)
    spatial_dims = len(shape) - 1
    units = from_meta(meta)
    units = units if units is not None and units.invertible else None
    images = []
    for path in list_images(folder):
        img = _read(path, spatial_dims, normalize, units)
        if tuple(img.shape) != tuple(shape):
            raise SynthError(
                f"{path.name} has shape {list(img.shape)} (channels first) but the real data has {list(shape)}: "
                "compare samples with the data config they were generated for (same data.spatial_dims, data.image_size, data.channels)"
            )
        if img.min() < -1.001 or img.max() > 1.001:
            raise SynthError(
                f"{path.name} has intensities in [{img.min():.3g}, {img.max():.3g}], not [-1, 1] and no synth intensity preset in its header: "
                "pass normalize_samples=true to map each image's 0.5-99.5th percentiles to [-1, 1] like the real data"
            )
        images.append(img.astype(np.float32))
    info_path = folder / "samples.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    return np.stack(images), info
