"""95 % confidence intervals over images, from features computed once.

A set-level number compares a set X with the reference R; its bootstrap draws images of X and of R with
replacement (independently) and recomputes the number from the precomputed features / kernels / pair scores.
The interval is the spread of the draws (their 2.5 and 97.5 percentiles around their median) placed around the
estimate: drawing with replacement repeats images, which shifts distances such as FRD upwards (fewer distinct
images), so raw percentiles could even exclude the estimate; re-centring keeps the spread and removes that
shift. Within-set kernel and pair averages skip pairs of one image drawn twice (they would count an image's
similarity with itself). A fraction (memorization) gets the Wilson score interval, which stays sensible at 0/n."""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def draws(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b, n) indices drawn with replacement."""
    return rng.integers(0, n, size=(b, n))


def interval(values, estimate: float) -> list[float] | None:
    """[lo, hi]: the 95 % spread of the finite draws around their median, placed around `estimate` (None when
    the estimate is not finite, or fewer than 80 % of the draws are: with 2-3 images most draws repeat one image,
    and the few finite ones would give a falsely narrow interval)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    v = v[np.isfinite(v)]
    if len(v) < max(10, 0.8 * n) or estimate is None or not np.isfinite(estimate):
        return None
    lo, med, hi = np.percentile(v, [50 * (1 - LEVEL), 50, 100 - 50 * (1 - LEVEL)])
    return [float(estimate - (med - lo)), float(estimate + (hi - med))]


def wilson(k: int, n: int) -> list[float] | None:
    """Wilson score 95 % interval of a proportion k / n."""
    if n == 0:
        return None
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half)]


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n images was drawn."""
    return np.bincount(idx, minlength=n).astype(np.float64)


def within_mean(k: np.ndarray, c: np.ndarray) -> float:
    """Mean of k[i, j] over drawn pairs of distinct draws that are not the same image (c: draw counts)."""
    same = float(c @ c)
    total = float(c.sum()) ** 2 - same
    return float((c @ k @ c - (c * c) @ np.diag(k)) / total) if total > 0 else float("nan")


def mmd(kxx: np.ndarray, krr: np.ndarray, kxr: np.ndarray, cx: np.ndarray | None = None, cr: np.ndarray | None = None) -> float:
    """Unbiased MMD^2 from kernel matrices (MONAI's MMDMetric formula), with images weighted by their draw counts
    cx / cr (all images once when None); about 0 for two samples of one distribution, can dip slightly below."""
    cx = np.ones(len(kxx)) if cx is None else cx
    cr = np.ones(len(krr)) if cr is None else cr
    return within_mean(kxx, cx) + within_mean(krr, cr) - 2 * float(cx @ kxr @ cr / (cx.sum() * cr.sum()))


def pair_means(pairs: np.ndarray, scores: np.ndarray, n: int, idx: np.ndarray) -> np.ndarray:
    """Mean pair score in each draw: pairs (P, 2) of images 0..n-1 with their scores, weighted by how often both
    images were drawn (idx: (b, n') drawn indices). nan where a draw holds no scored pair."""
    if not len(pairs):
        return np.full(len(idx), np.nan)
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
    w = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * scores).sum(1) / np.where(total > 0, total, 1), np.nan)
