"""The rows of an evaluation: set-level distances of an image set X to the real reference R, each with its 95 %
bootstrap interval.

Everything per image is computed once (`extract`): radiomic features for FRD, first-order features, pixel Gram
matrices (against itself and R), MS-SSIM of pairs inside the set, sharpness. A `Scorer` holds what is fixed
by R alone and shared by every row (the FRD feature space, the first-order feature scales, the RBF bandwidth);
`Scorer.score` gives one row for any subset of X against any subset of R (per-class rows use the same
features), and its intervals come from resampling those precomputed numbers (bootstrap.py).

Row metrics (lower is better unless said): frd, mmd_rbf (Gaussian kernel on pixels, sees collapse), mmd
(linear kernel on pixels: compares mean images only), first_order_wasserstein / first_order_ks (mean over the
first-order features), diversity_gap (|diversity of X - diversity of R|), ms_ssim_diversity (mean pairwise
MS-SSIM of X: near R's is best; high = alike / collapse), sharpness_ratio (mean sharpness of X / of R: 1 is
best; < 1 blurry, > 1 noisy)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from synth.evaluation import bootstrap, distances, features
from synth.evaluation.frd import FeatureSpace, log_frechet

ROW_METRICS = ("frd", "mmd_rbf", "mmd", "first_order_wasserstein", "first_order_ks", "diversity_gap")  # lower is better
CI_METRICS = (*ROW_METRICS, "ms_ssim_diversity", "sharpness_ratio")
NONNEGATIVE = ("first_order_wasserstein", "first_order_ks", "diversity_gap", "ms_ssim_diversity", "sharpness_ratio")  # interval clipped at 0


@dataclass
class SetFeatures:
    """Per-image numbers of one set, computed once."""

    frd: np.ndarray          # (N, F) raw frd-score features (NaN row: extraction failed)
    first_order: np.ndarray  # (N, 18 x C)
    empty: int               # images without foreground (first-order measured over the whole image)
    gram_self: np.ndarray    # (N, N) linear per-pixel kernel
    gram_ref: np.ndarray     # (N, m_R) against the reference images
    pairs: np.ndarray        # (P, 2) scored pairs inside the set
    pair_scores: np.ndarray  # (P,) their MS-SSIM
    sharp: np.ndarray        # (N,)
    names: list[str]         # first-order feature names


def extract(name: str, x: np.ndarray, reference: np.ndarray | None, spatial_dims: int, foreground_threshold: float,
            max_pairs: int = 1000, seed: int = 0) -> SetFeatures:
    """Every per-image number of set `x` (reference None: x is the reference itself)."""
    fo, names, empty = features.first_order(x, spatial_dims, foreground_threshold, desc=f"first-order {name}")
    pairs, scores = distances.pair_scores(x, spatial_dims, max_pairs=max_pairs, seed=seed)
    g = distances.gram(x, x)
    return SetFeatures(frd=features.frd_features(x, spatial_dims, desc=f"FRD {name}"), first_order=fo, empty=int(empty),
                       gram_self=g, gram_ref=g if reference is None else distances.gram(x, reference), pairs=pairs,
                       pair_scores=scores, sharp=distances.sharpness(x), names=names)


def _pairs_within(s: SetFeatures, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scored pairs with both images in idx, re-indexed to positions in idx."""
    pos = np.full(len(s.sharp), -1)
    pos[idx] = np.arange(len(idx))
    if not len(s.pairs):
        return s.pairs, s.pair_scores
    p = pos[s.pairs]
    keep = (p >= 0).all(axis=1)
    return p[keep], s.pair_scores[keep]


class Scorer:
    """What R fixes for every row, and the rows themselves."""

    def __init__(self, ref: SetFeatures, fo_names: list[str], n_boot: int = 500, seed: int = 0):
        self.ref, self.fo_names, self.n_boot, self.seed = ref, fo_names, int(n_boot), seed
        self.space = FeatureSpace.fit(ref.frd)
        self.ref_z, self.ref_ok = self._z(ref)
        self.fo_scale = distances.feature_scale(ref.first_order)
        self.bandwidth = distances.rbf_bandwidth(ref.gram_self)

    def _z(self, s: SetFeatures) -> tuple[np.ndarray, np.ndarray]:
        z_ok, ok = self.space.transform(s.frd)
        z = np.full((len(ok), z_ok.shape[1]), np.nan)
        z[ok] = z_ok
        return z, ok

    def reference_diversity(self, ri: np.ndarray | None = None) -> dict:
        ri = np.arange(len(self.ref.sharp)) if ri is None else ri
        pairs, scores = _pairs_within(self.ref, ri)
        value = float(scores.mean()) if len(scores) else float("nan")
        rng = np.random.default_rng([self.seed, 1])
        draws = bootstrap.pair_means(pairs, scores, len(ri), bootstrap.draws(len(ri), self.n_boot, rng))
        return {"value": value, "ci": bootstrap.interval(draws, value), "pairs": int(len(scores))}

    def score(self, x: SetFeatures, xi: np.ndarray | None = None, ri: np.ndarray | None = None) -> tuple[dict, dict]:
        """One row for images xi of x against images ri of R (all when None): values, intervals, counts, and
        the per-feature first-order distances."""
        xi = np.arange(len(x.sharp)) if xi is None else np.asarray(xi)
        ri = np.arange(len(self.ref.sharp)) if ri is None else np.asarray(ri)
        z, ok = self._z(x)
        zx, okx, zr, okr = z[xi], ok[xi], self.ref_z[ri], self.ref_ok[ri]
        kxx, krr, kxr = x.gram_self[np.ix_(xi, xi)], self.ref.gram_self[np.ix_(ri, ri)], x.gram_ref[np.ix_(xi, ri)]
        d2 = lambda a, b, c: distances.squared_distances(a, np.diag(b), np.diag(c))  # noqa: E731
        rxx, rrr, rxr = (distances.rbf(d2(kxx, kxx, kxx), self.bandwidth), distances.rbf(d2(krr, krr, krr), self.bandwidth),
                         distances.rbf(d2(kxr, kxx, krr), self.bandwidth))
        fox, for_ = x.first_order[xi], self.ref.first_order[ri]
        px, sx = _pairs_within(x, xi)
        pr, sr = _pairs_within(self.ref, ri)
        shx, shr = x.sharp[xi], self.ref.sharp[ri]

        def values(ix, ir, div_x, div_r):
            w, ks = distances.w1_ks_columns(fox[ix], for_[ir])
            cx, cr = bootstrap.counts(ix, len(xi)), bootstrap.counts(ir, len(ri))
            return {"frd": log_frechet(zx[ix][okx[ix]], zr[ir][okr[ir]]), "mmd_rbf": bootstrap.mmd(rxx, rrr, rxr, cx, cr),
                    "mmd": bootstrap.mmd(kxx, krr, kxr, cx, cr), "first_order_wasserstein": float((w / self.fo_scale).mean()),
                    "first_order_ks": float(ks.mean()), "diversity_gap": abs(div_x - div_r), "ms_ssim_diversity": div_x,
                    "sharpness_ratio": float(shx[ix].mean() / max(shr[ir].mean(), 1e-12))}

        all_x, all_r = np.arange(len(xi)), np.arange(len(ri))
        div_x = float(sx.mean()) if len(sx) else float("nan")
        div_r = float(sr.mean()) if len(sr) else float("nan")
        row = values(all_x, all_r, div_x, div_r)
        rng_x, rng_r = np.random.default_rng([self.seed, 2, len(xi)]), np.random.default_rng([self.seed, 1])
        bx, br = bootstrap.draws(len(xi), self.n_boot, rng_x), bootstrap.draws(len(ri), self.n_boot, rng_r)
        dx, dr = bootstrap.pair_means(px, sx, len(xi), bx), bootstrap.pair_means(pr, sr, len(ri), br)
        with np.errstate(all="ignore"), threadpool_limits(1):  # many small matrix ops: BLAS threads only contend
            boot = [values(bx[b], br[b], dx[b], dr[b]) for b in range(self.n_boot)]
        row["ci"] = {k: bootstrap.interval([d[k] for d in boot], row[k]) for k in CI_METRICS}
        for k in NONNEGATIVE:
            if row["ci"][k]:
                row["ci"][k][0] = max(0.0, row["ci"][k][0])
        row.update(n=int(len(xi)), frd_images=int(okx.sum()), frd_dropped_images=int((~okx).sum()), frd_space=self.space.fingerprint)
        per_feature = distances.feature_distances(fox, for_, self.fo_names, self.fo_scale)
        return row, per_feature
