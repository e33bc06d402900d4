"""FRD statistics (frd-score v1) in one feature space fixed by the real reference alone.

`FeatureSpace.fit(reference_features)` decides once which radiomic columns count and how they are z-scored:
columns that are finite for every reference image are kept, and z = (x - mean_R) / sd_R with the reference's
mean and SD (frd-score's `z_score_normalize` with the reference as base distribution). Every row of a report
(synthetic, real vs real, noise, per class) is transformed with the same space, so all rows use the same
columns and scale; `fingerprint` names the space so that compare.py can check that runs in one table used the
same one. (Before, the column mask depended on the pair compared.)

One deliberate difference from frd-score, which drops columns that are constant over the reference (their
z-scores are infinite): here such a column (SD zero or float round-off) is kept with an SD floor of
max(1 unit, 0.1 % of its value). frd-score's extraction normalises every image (pyradiomics `normalize`), so
its only intensity-scale columns are the image minimum, maximum and mean; after percentile normalisation every
real image spans grey 0-255, so minimum and maximum are constant over R and dropping them made FRD blind to a
set 20x off in intensity (it scored better than real vs real). With the floor, a set that differs where every
real image agrees is measured as different (1 grey level = 1 SD); sets that agree there are unaffected.

An image whose features could not be computed (NaN, or Inf in a kept column) is dropped from that row and
counted: the count is shown next to the FRD in report.md and compare.md.
FRD = log of the squared Fréchet distance (`frechet_distance`) between the z-scored sets."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from synth.errors import SynthError


def numerically_constant(reference: np.ndarray, rtol: float = 1e-5, atol: float = 1e-8) -> np.ndarray:
    """Columns whose reference spread is float round-off: SD <= rtol x the largest |value| in the reference, or
    SD <= atol. The absolute bound matters most: the mean and median of a wavelet high-pass band are exactly 0 on an
    image whose background is flat (every real MRI slice after percentile scaling), so over R they are round-off
    around zero (SD ~1e-14, which the relative bound cannot see: the values are round-off too). A sample with a
    background a quarter of a grey level off zero then sat 1e13 SDs away and FRD (a log) read ~60 for clean-looking
    samples, near the noise row (issue #17). Features are computed on grey levels 0-255: an SD below 1e-8 of such
    units is never a real spread. frd-score drops exactly-constant columns (their z-scores are inf); round-off ones
    would get z-scores of 1e13-1e20 and swamp the distance."""
    ref = reference.astype(np.float64)
    sd = ref.std(axis=0)
    return (sd <= rtol * np.abs(ref).max(axis=0)) | (sd <= atol)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussians fitted to the rows of x and y (np.cov, ddof 1), the formula of
    frd-score's `calculate_frechet_distance`: |mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr sqrt(S_x S_y). With
    S = Xc^T Xc / (n - 1), tr sqrt(S_x S_y) is exactly the nuclear norm of M = Xc Yc^T / sqrt((n_x - 1)(n_y - 1))
    (the sum of the square roots of the eigenvalues of M M^T): an n x n problem instead of a d x d matrix square
    root (d ~ 400-1000 features, n images), faster and free of the singular-matrix fix-ups sqrtm needs when there
    are fewer images than features."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    m = xc @ yc.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(m @ m.T), 0, None)).sum() / np.sqrt((len(x) - 1) * (len(y) - 1))
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (xc * xc).sum() / (len(x) - 1) + (yc * yc).sum() / (len(y) - 1) - 2 * cross)


def log_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """FRD of two z-scored sets (log of the squared Fréchet distance); nan with fewer than 2 rows on a side."""
    if min(len(x), len(y)) < 2:
        return float("nan")
    d2 = frechet_distance(x, y)
    return float(np.log(d2)) if d2 > 0 else float("-inf")


def digest(*parts) -> str:
    """A short sha256 of arrays / strings (12 hex digits): the same inputs give the same name on any machine."""
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else str(p).encode())
    return h.hexdigest()[:12]


@dataclass
class FeatureSpace:
    """The kept radiomic columns and their z-scoring, from the real reference alone."""

    keep: np.ndarray            # (F,) bool over every extracted column
    mean: np.ndarray            # (K,) reference mean of the kept columns (float32, as frd-score)
    sd: np.ndarray              # (K,) reference SD (ddof 0); the floor where R is constant
    constant: np.ndarray        # (K,) bool: constant over R (SD floored)
    reference_dropped: int      # reference images whose features failed (not part of R's statistics)

    @classmethod
    def fit(cls, reference: np.ndarray, rtol: float = 1e-5) -> FeatureSpace:
        ok = np.isfinite(reference).all(axis=1)
        if ok.sum() < 2:
            raise SynthError(f"radiomic features failed for {int((~ok).sum())} of {len(reference)} real reference images: "
                             "FRD needs >= 2; check the real images (constant or empty images have no texture features)")
        ref = reference[ok].astype(np.float32)
        keep = np.isfinite(ref).all(axis=0)
        kept = ref[:, keep]
        mean, sd = kept.mean(axis=0), kept.std(axis=0)
        constant = numerically_constant(kept, rtol) | (sd == 0)
        if constant.all():
            raise SynthError("every radiomic feature is constant over the real reference images: FRD cannot compare sets; check the real data")
        sd = np.where(constant, np.maximum(1.0, 1e-3 * np.abs(mean)), sd).astype(np.float32)
        return cls(keep=keep, mean=mean, sd=sd, constant=constant, reference_dropped=int((~ok).sum()))

    def transform(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z-scores of the images whose kept features are finite (float64), bool mask of those images)."""
        if features.shape[1] != len(self.keep):
            raise SynthError(f"{features.shape[1]} radiomic features but the reference space has {len(self.keep)}: extract both sets with one extractor")
        kept = features[:, self.keep].astype(np.float32)
        ok = np.isfinite(kept).all(axis=1)
        with np.errstate(all="ignore"):
            z = ((kept[ok] - self.mean) / self.sd).astype(np.float64)
        ok_z = np.isfinite(z).all(axis=1)
        ok[np.flatnonzero(ok)[~ok_z]] = False
        return z[ok_z], ok

    @property
    def fingerprint(self) -> str:
        """Names the feature set: which columns of how many, and their reference statistics."""
        return digest(np.packbits(self.keep), len(self.keep), np.round(self.mean, 3), np.round(self.sd, 3))

    def describe(self) -> dict:
        return {"columns_total": int(len(self.keep)), "columns_kept": int(self.keep.sum()),
                "columns_constant_in_reference": int(self.constant.sum()), "fingerprint": self.fingerprint,
                "reference_dropped_images": self.reference_dropped,
                "rule": "columns finite for every real reference image, z-scored with the reference mean and SD; columns constant "
                        "over the reference keep an SD floor of max(1, 0.1 % of the value); one space for every row"}
