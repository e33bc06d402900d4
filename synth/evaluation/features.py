"""Radiomic features of image sets (pyradiomics on in-memory SimpleITK images), 2D and 3D.

* `first_order`: the 18 pyradiomics first-order features of every image inside its foreground mask
  (intensities mapped from [-1, 1] to grey levels 0..255; foreground = grey > threshold), as the seed paper did.
* `frd_features` + `frd`: the Fréchet Radiomics Distance of the `frd-score` package, version v1: its own
  pyradiomics extraction config (Original + LoG + Wavelet images; first-order and texture classes), z-scores
  relative to the real reference set, NaN/Inf columns dropped, log of the squared Fréchet distance; the
  extractor and normalisation are frd-score's own functions. Differences: frd-score reads image files and
  resamples them to 2 mm; here the images are passed in memory on their own pixel grid (unit spacing, no
  resampling), so that 16-64 px images keep their detail and 64 images take seconds; and the trace term is
  computed exactly on the n x n image cross-product rather than by a d x d matrix square root
  (`frechet_distance`, same value).
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


def frd_features(images: np.ndarray, spatial_dims: int, desc: str = "FRD features") -> np.ndarray:
    """(N, F) frd-score v1 features (numeric diagnostics included, as frd-score does), whole-image mask less
    one corner voxel (frd-score's default without masks). Images whose extraction fails get a NaN row."""
    extractor = frd_extractor(spatial_dims)
    rows = []
    for img in tqdm(images, desc=desc, unit="img", leave=False, disable=None):
        row = []
        for channel in img:
            sitk_img = _sitk(((np.clip(channel, -1, 1) + 1) * 127.5).astype(np.float32), spatial_dims)
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


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussians fitted to the rows of x and y (np.cov, ddof 1), the formula of
    frd-score's `calculate_frechet_distance`: |mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr sqrt(S_x S_y). With
    S = Xc^T Xc / (n - 1), tr sqrt(S_x S_y) is exactly the nuclear norm of Xc Yc^T / sqrt((n_x - 1)(n_y - 1)):
    an n x n problem instead of a d x d matrix square root (d ~ 400-1000 features, n images), faster and free of
    the singular-matrix fix-ups sqrtm needs when there are fewer images than features."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((len(x) - 1) * (len(y) - 1))
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (xc * xc).sum() / (len(x) - 1) + (yc * yc).sum() / (len(y) - 1) - 2 * cross)


def frd(features: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """FRD v1 of `features` against the real `reference` (frd-score's statistics: rows with NaN dropped,
    float32, z-score w.r.t. the reference, NaN/Inf columns dropped, log of the squared Fréchet distance).
    Returns (frd, images dropped for NaN features)."""
    from frd_score.frd import z_score_normalize

    sets = []
    dropped = 0
    for feats in (reference, features):
        keep = ~np.isnan(feats).any(axis=1)
        dropped += int((~keep).sum()) if feats is features else 0
        sets.append(feats[keep].astype(np.float32))
    if min(len(s) for s in sets) < 2:
        return float("nan"), dropped
    with np.errstate(all="ignore"):
        normed = [z_score_normalize(s, 0, 1, base_distribution=sets[0], replace_nan=False, handle_std_zero=False) for s in sets]
    bad = np.zeros(normed[0].shape[1], dtype=bool)
    for nf in normed:
        bad |= ~np.isfinite(nf).all(axis=0)
    bad |= numerically_constant(sets[0], sets[1])
    d2 = frechet_distance(*(nf[:, ~bad].astype(np.float64) for nf in normed))
    return (float(np.log(d2)) if d2 > 0 else float("-inf")), dropped


def numerically_constant(reference: np.ndarray, other: np.ndarray, rtol: float = 1e-5) -> np.ndarray:
    """Columns whose reference spread is float round-off (SD <= rtol x the largest |value| of either set), e.g.
    a wavelet band's median over a flat background, 1e-30 instead of 0. frd-score drops exactly-constant columns
    (their z-scores are inf); round-off ones would instead get z-scores of 1e20 and swamp the distance, so they
    are dropped the same way."""
    scale = np.maximum(np.abs(reference).max(axis=0), np.abs(other).max(axis=0))
    return reference.astype(np.float64).std(axis=0) <= rtol * scale
