"""Radiomic features of image sets (pyradiomics on in-memory SimpleITK images), 2D and 3D.

* `first_order`: the 18 pyradiomics first-order features of every image inside its foreground mask
  (intensities mapped from [-1, 1] to grey levels 0..255; foreground = grey > threshold), as the seed paper did.
* `frd_features`: the features of the Fréchet Radiomics Distance of the `frd-score` package, version v1: its own
  pyradiomics extraction config (Original + LoG + Wavelet images; first-order and texture classes); the
  statistics (reference-only column mask and z-scoring, Fréchet distance) are in frd.py. Differences: frd-score reads image files and
  resamples them to 2 mm; here the images are passed in memory on their own pixel grid (unit spacing, no
  resampling), so that 16-64 px images keep their detail and 64 images take seconds. Intensities are rounded to
  integer grey levels 0..255 first, as in the 8-bit images frd-score typically reads: the wavelet texture
  features of a flat background react to noise far below one grey level (0.06 grey levels of noise moved FRD by
  2, with real-vs-real at 6 and noise at 12), noise that no saved 8-bit image shows.
Images are (N, C, *S) float arrays in [-1, 1]; with several channels the features of each are concatenated.
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

FIRST_ORDER_BIN_WIDTH = 8  # grey levels per histogram bin (32 bins over 0..255) for Entropy / Uniformity


def _quiet_radiomics() -> None:
    import radiomics

    radiomics.setVerbosity(60)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    logging.getLogger("pykwalify").setLevel(logging.WARNING)  # pyradiomics validates its YAML config at INFO


def _sitk(array: np.ndarray, spatial_dims: int):
    """(*S) array -> SimpleITK image with unit spacing; 2D becomes a one-slice volume (pyradiomics force2D)."""
    import SimpleITK as sitk

    arr = np.ascontiguousarray(array[None] if spatial_dims == 2 else array)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


def _mask_like(image, mask: np.ndarray, spatial_dims: int):
    import SimpleITK as sitk

    m = sitk.GetImageFromArray(np.ascontiguousarray((mask[None] if spatial_dims == 2 else mask).astype(np.uint8)))
    m.CopyInformation(image)
    return m


def _channel_names(names: list[str], channels: int) -> list[str]:
    return names if channels == 1 else [f"c{c}_{n}" for c in range(channels) for n in names]


# ----- first-order features inside a foreground mask ------------------------------------------------------
def first_order_extractor(spatial_dims: int):
    from radiomics import featureextractor

    _quiet_radiomics()
    settings = {"binWidth": FIRST_ORDER_BIN_WIDTH, "label": 1, "minimumROIDimensions": 1, "minimumROISize": 2,
                "force2D": spatial_dims == 2, "force2Ddimension": 0}
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("firstorder")
    return extractor


def first_order(images: np.ndarray, spatial_dims: int, threshold: float = 0.1, desc: str = "first-order") -> tuple[np.ndarray, list[str], int]:
    """(N, F) features, their names, and how many images had no foreground (< 2 voxels above `threshold` of
    the [0, 1] range): those are measured over the whole image instead, so an empty sample still counts."""
    extractor = first_order_extractor(spatial_dims)
    rows, names, empty = [], None, 0
    for img in tqdm(images, desc=desc, unit="img", leave=False, disable=None):
        row = []
        for channel in img:
            grey = (np.clip(channel, -1, 1) + 1) * 127.5
            mask = grey > threshold * 255
            if mask.sum() < 2:
                empty += 1
                mask = np.ones_like(mask)
            if mask.all():
                mask.flat[0] = False  # pyradiomics refuses a mask without background
            sitk_img = _sitk(grey.astype(np.float32), spatial_dims)
            out = extractor.execute(sitk_img, _mask_like(sitk_img, mask, spatial_dims))
            feats = {k.replace("original_firstorder_", ""): float(v) for k, v in out.items() if k.startswith("original_firstorder_")}
            names = names or list(feats)
            row.extend(feats[n] for n in names)
        rows.append(row)
    return np.asarray(rows, dtype=np.float64), _channel_names(names or [], images.shape[1]), empty


# ----- FRD (frd-score v1) ------------------------------------------------------------------------------------
def frd_extractor(spatial_dims: int):
    from frd_score.frd import FRD_VERSION_V1, get_feature_extractor

    _quiet_radiomics()
    extractor = get_feature_extractor(frd_version=FRD_VERSION_V1, image_dim=spatial_dims)
    extractor.settings["resampledPixelSpacing"] = None  # native pixel grid (see the module docstring)
    return extractor


def frd_features(images: np.ndarray, spatial_dims: int, desc: str = "FRD features", grey_levels: bool = True) -> np.ndarray:
    """(N, F) frd-score v1 features (numeric diagnostics included, as frd-score does) of the images on integer grey
    levels 0..255 (`grey_levels=False`: unrounded, for comparing the extraction itself), whole-image mask less one
    corner voxel (frd-score's default without masks). Images whose extraction fails get a NaN row."""
    extractor = frd_extractor(spatial_dims)
    rows = []
    for img in tqdm(images, desc=desc, unit="img", leave=False, disable=None):
        row = []
        for channel in img:
            grey = (np.clip(channel, -1, 1) + 1) * 127.5
            sitk_img = _sitk((np.round(grey) if grey_levels else grey).astype(np.float32), spatial_dims)
            mask = np.ones(channel.shape, dtype=bool)
            mask.flat[0] = False
            try:
                out = extractor.execute(sitk_img, _mask_like(sitk_img, mask, spatial_dims))
            except Exception:  # noqa: BLE001  (a degenerate image, e.g. constant: counted as dropped below)
                row = None
                break
            for key, value in out.items():
                if "diagnostics" in key:
                    try:
                        row.append(float(value))
                    except (TypeError, ValueError):
                        pass
                else:
                    row.append(float(value))
        rows.append(row)
    width = max((len(r) for r in rows if r is not None), default=0)
    return np.asarray([r if r is not None and len(r) == width else [np.nan] * width for r in rows], dtype=np.float64)
