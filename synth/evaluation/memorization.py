"""Memorization audit with a threshold calibrated on held-out real data.

Similarity: for an image, its highest Pearson correlation with any training image (all channels and voxels),
both images low-passed first with a Gaussian of sigma 2 voxels (`SMOOTH_SIGMA`), over every shift of the image by
up to 1/16 of its size along each axis (`SHIFT_FRACTION`), compared on the part of the frame both images share.
A training image moved by a few voxels is still a copy: unshifted, a 64x64 MNI152 slice moved by 3-4 pixels
correlated 0.79-0.90 with itself, far below what an unseen slice 8 mm away scores (0.98). Shifts are searched
against each image's `CANDIDATES` nearest training images by unshifted correlation, so the cost does not grow with
the training set (a copy moved by a few voxels kept its source among them on the demo's slices; among thousands of
near-identical images it may not, and then it is compared with its nearest look-alikes instead). The low-pass: raw correlation rewards smoothness (a
blurred image correlates more with every training image than a sharp unseen one does, so a blurry model looked
like a copier); at a common resolution a blurred generic image scores like an unseen real image while exact and
blurry copies of a training image still score about 1.

How close an unseen real image naturally is to the training set depends on the data (smooth anatomy from one
brain: r > 0.97; varied tiles: r ~ 0.5), so no fixed threshold fits. The threshold is the `quantile` (0.99) of
the nearest-neighbour similarities of the VAL split to the training split; the TEST split checks it (about
1 - quantile of its images should lie above, and that fraction is reported), so calibration and check never
share images. A sample at or above the threshold is closer to a training image than 99 % of unseen real images
are: a likely copy. Reported per set: the distribution, the fraction above with its Wilson 95 % interval;
and `closer_than_real`, a Mann-Whitney comparison of samples' and test images' similarities (a whole-set form of
Meehan et al. 2020's C_T data-copying test: AUC 0.5 = samples are as close to the training set as unseen real
images, near 1 = systematically closer, i.e. copying)."""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from synth.errors import SynthError
from synth.evaluation.bootstrap import wilson

log = logging.getLogger(__name__)


SMOOTH_SIGMA = 2.0  # voxels
SHIFT_FRACTION = 1 / 16  # of each spatial size: shifts a copy may have
CANDIDATES = 16  # nearest training images (unshifted) searched over shifts
EDGE = int(2 * SMOOTH_SIGMA)  # voxels trimmed where shifted frames were cut (the low-pass reach)


def smooth(images: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Gaussian low-pass of (N, C, *S) images over the spatial axes."""
    from scipy import ndimage

    x = np.asarray(images, dtype=np.float32)
    return ndimage.gaussian_filter(x, sigma=(0, 0, *[sigma] * (x.ndim - 2)), mode="nearest")


def _unit(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows centred and scaled to unit norm (their dot products are Pearson correlations)."""
    x = x.to(dtype).flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def max_shift(spatial: tuple[int, ...]) -> list[int]:
    """Voxels an image may be moved along each spatial axis and still count as the same image (1/16 of the size,
    halves rounded up: 16 -> 1, 32 -> 2, 64 -> 4)."""
    return [int(n * SHIFT_FRACTION + 0.5) for n in spatial]


def _overlap(query: torch.Tensor, candidates: torch.Tensor, off) -> tuple[torch.Tensor, torch.Tensor]:
    """The query (C, *S) moved by `off` voxels and the candidates (K, C, *S), cut to the frame they then share. On
    an axis where the frames were cut, `EDGE` voxels more go at both ends: there the low-pass saw different
    surroundings (without this, a moved copy of an image with content up to its border scored 0.9990-0.9998)."""
    qs, cs = [slice(None)], [slice(None), slice(None)]
    for o, m in zip(off, query.shape[1:]):
        t = min(EDGE, (m - abs(o)) // 4) if o else 0
        qs.append(slice(max(o, 0) + t, m + min(o, 0) - t))
        cs.append(slice(max(-o, 0) + t, m + min(-o, 0) - t))
    return query[tuple(qs)], candidates[tuple(cs)]


def _search(query: torch.Tensor, candidates: torch.Tensor, offsets: list) -> torch.Tensor:
    """Correlations (float32, for ranking) of each candidate with the query at each offset: (K, offsets)."""
    out = []
    for off in offsets:
        q, c = _overlap(query, candidates, off)
        out.append(_unit(c, torch.float32) @ _unit(q.unsqueeze(0), torch.float32)[0])
    return torch.stack(out, dim=1)


def _best_match(query: torch.Tensor, candidates: torch.Tensor, shifts: list[int]) -> tuple[float, int]:
    """The candidate (sorted by unshifted correlation, best first) most like the low-passed (C, *S) query over every
    shift of up to `shifts` voxels per axis, and that correlation (float64, on the shared frame). Axes allowing 2+
    voxels are searched coarse to fine: on images pooled 2x along them (lossless enough after the sigma-2 low-pass)
    over half the range, then at full resolution within one voxel of the best coarse offset of the 4 best candidates
    (a 64^3 volume: 0.3 s per image instead of 13.5 s for every shift). The unshifted best is always among the
    trials, so the shifted similarity is never below the plain one."""
    offsets = lambda ranges: [tuple(o) for o in itertools.product(*ranges)]  # noqa: E731
    zero = tuple(0 for _ in shifts)
    factors = [2 if s >= 2 else 1 for s in shifts]
    if 2 in factors:
        pool = getattr(torch.nn.functional, f"avg_pool{len(shifts)}d")
        coarse = offsets([range(-(s // f), s // f + 1) for s, f in zip(shifts, factors)])
        r = _search(pool(query.unsqueeze(0), factors)[0], pool(candidates, factors), coarse)
        keep = r.max(1).values.topk(min(4, len(candidates))).indices.tolist()
        trials = {(0, zero)} | {(k, off) for k in keep for off in offsets(
            [range(max(-s, 2 * c - 1), min(s, 2 * c + 1) + 1) if f == 2 else [c]
             for c, s, f in zip(coarse[int(r[k].argmax())], shifts, factors)])}
        trials = sorted(trials)
    else:
        trials = [(k, off) for off in offsets([range(-s, s + 1) for s in shifts]) for k in range(len(candidates))]
    fine = torch.cat([_search(query, candidates[k:k + 1], [off])[0] for k, off in trials])
    k, off = trials[int(fine.argmax())]
    q, c = _overlap(query, candidates[k:k + 1], off)
    return float(_unit(c) @ _unit(q.unsqueeze(0))[0]), k


class Neighbours:
    """The training images prepared once for every nearest-neighbour query of an audit: low-passed, as unit rows
    (to rank candidates), and the shifts their size allows."""

    def __init__(self, train: np.ndarray):
        self.n = len(train)
        self.smoothed = torch.as_tensor(smooth(train))
        self.rows = _unit(self.smoothed, torch.float32)
        self.shifts = max_shift(tuple(np.shape(train)[2:]))

    def nearest(self, queries: np.ndarray, exclude: np.ndarray | None = None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """For each query its highest Pearson correlation with any training image over small shifts (module
        docstring), and that image's index; `exclude`: per query, a training index it may not match (itself)."""
        return self._nearest_smoothed(torch.as_tensor(smooth(queries)), exclude, chunk)

    def members(self, indices: np.ndarray) -> np.ndarray:
        """For these training images, their similarity with the nearest OTHER training image."""
        return self._nearest_smoothed(self.smoothed[torch.as_tensor(indices)], np.asarray(indices), 256)[0]

    def _nearest_smoothed(self, queries: torch.Tensor, exclude: np.ndarray | None, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        k_top = min(CANDIDATES, self.n - (exclude is not None))
        if k_top < 1:
            raise SynthError(f"the memorization audit needs {1 + (exclude is not None)} or more training images to compare with, "
                             f"got {self.n}: give the data more training items")
        best, index = [], []
        for k in range(0, len(queries), chunk):
            q = queries[k:k + chunk]
            plain = _unit(q, torch.float32) @ self.rows.T
            if exclude is not None:
                plain[torch.arange(len(q)), torch.as_tensor(exclude[k:k + chunk])] = -np.inf
            top = plain.topk(k_top, dim=1).indices
            for i in range(len(q)):
                value, j = _best_match(q[i], self.smoothed[top[i]], self.shifts)
                best.append(value)
                index.append(int(top[i, j]))
        return np.asarray(best, dtype=np.float64), np.asarray(index, dtype=np.int64)


def nearest(queries: np.ndarray, train: np.ndarray, chunk: int = 256, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`Neighbours(train).nearest(queries, exclude)`: for one query set; an audit prepares the training set once."""
    return Neighbours(train).nearest(queries, exclude, chunk)


def calibrate(calibration_scores: np.ndarray, quantile: float) -> dict:
    """The threshold: the `quantile` of held-out real images' nearest-training similarities."""
    if not 0.5 <= quantile < 1:
        raise SynthError(f"memorization.quantile={quantile} must be in [0.5, 1): the share of unseen real images that stay below the threshold (e.g. 0.99)")
    threshold = float(np.quantile(calibration_scores, quantile))
    if threshold > 0.9999:
        log.warning("held-out real images are near-exact copies of training images (val-to-train r = %.5f): the split leaks, "
                    "and a copied sample cannot be told from an unseen real one", threshold)
    n = len(calibration_scores)
    return {"threshold": threshold, "quantile": float(quantile), "split": "val", "n": int(n),
            # a new unseen image exceeds the q-quantile of n calibration images with probability about
            # max(1 - q, 1 / (n + 1)): with few calibration images the quantile is their maximum
            "expected_false_rate": round(max(1 - float(quantile), 1 / (n + 1)), 6),
            "method": f"{quantile:g} quantile of the val split's nearest-training Pearson correlations; checked on the test split"}


def summary(scores: np.ndarray, threshold: float) -> dict:
    q = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(scores) else [float("nan")] * 5
    above = int((scores >= threshold).sum())
    return {
        "n": int(len(scores)),
        "n_above": above,
        "fraction_above": above / len(scores) if len(scores) else float("nan"),
        "fraction_above_ci": wilson(above, len(scores)),
        "mean": float(scores.mean()) if len(scores) else float("nan"),
        "max": float(scores.max()) if len(scores) else float("nan"),
        "quantiles": dict(zip(["q05", "q25", "q50", "q75", "q95"], [float(v) for v in q])),
    }


def closer_than_real(samples: np.ndarray, held_out: np.ndarray) -> dict:
    """AUC = P(a sample's similarity > a held-out image's) and the one-sided Mann-Whitney p-value."""
    res = stats.mannwhitneyu(samples, held_out, alternative="greater")
    return {"auc": float(res.statistic / (len(samples) * len(held_out))), "p_value": float(res.pvalue),
            "meaning": "0.5: samples are as close to the training set as unseen real images; near 1: closer (copying)"}


def authenticity(scores: dict[str, tuple[np.ndarray, np.ndarray]], train: np.ndarray | Neighbours) -> dict:
    """Alaa et al. 2022's authenticity: an image is closer to its nearest training image than that training image
    is to its own nearest other training image (the training set's local spacing, e.g. 1 mm neighbouring slices).
    Per set of (similarity, nearest index): the count and share closer than that, with a Wilson interval; unseen
    real images give the share to compare with. Stricter than the threshold where training images are dense."""
    index = train if isinstance(train, Neighbours) else Neighbours(train)
    used = np.unique(np.concatenate([idx for _, idx in scores.values()]))
    if index.n < 2 or not len(used):
        return {}
    own = dict(zip(used.tolist(), index.members(used).tolist()))
    out = {}
    for name, (sim, idx) in scores.items():
        k = int(sum(s > own[int(j)] for s, j in zip(sim, idx)))
        out[name] = {"n": int(len(sim)), "n_closer": k, "fraction": k / len(sim) if len(sim) else float("nan"), "ci": wilson(k, len(sim))}
    out["meaning"] = ("images closer to their nearest training image than that image is to its nearest other training image "
                      "(Alaa et al. 2022, authenticity); compare the samples' share with unseen real images'")
    return out


def audit(samples: np.ndarray, train: np.ndarray, calibration: np.ndarray, held_out: np.ndarray, noise: np.ndarray,
          quantile: float = 0.99, pairs: int = 8) -> tuple[dict, dict]:
    """The audit as JSON (synthetic, test-split real images and noise against the training images; the
    threshold from the val split) and the raw scores and indices (for figures)."""
    index = Neighbours(train)
    raw = {name: index.nearest(x) for name, x in (("synthetic", samples), ("real_held_out", held_out), ("noise", noise),
                                                 ("real_val", calibration))}
    cal = calibrate(raw["real_val"][0], quantile)
    t = cal["threshold"]
    order = np.argsort(-raw["synthetic"][0])[:pairs]
    result = {
        "similarity": f"pearson correlation with the nearest training image, both low-passed (Gaussian sigma {SMOOTH_SIGMA:g} voxels), "
                      f"best over shifts of up to {index.shifts} voxels",
        "threshold": t,
        "calibration": cal,
        "n_train": int(len(train)),
        **{name: summary(scores, t) for name, (scores, _) in raw.items()},
        "closer_than_real": closer_than_real(raw["synthetic"][0], raw["real_held_out"][0]),
        "closer_than_training_neighbours": authenticity({k: raw[k] for k in ("synthetic", "real_held_out")}, index),
        "closest_pairs": [{"sample": int(i), "train_index": int(raw["synthetic"][1][i]), "correlation": float(raw["synthetic"][0][i])} for i in order],
    }
    result["real_held_out"]["split"], result["real_val"]["split"] = "test", "val"
    result["calibration"]["check_fraction_test"] = result["real_held_out"]["fraction_above"]
    return result, {k: v for k, v in raw.items() if k != "real_val"}


def save_pairs(samples: np.ndarray, train: np.ndarray, result: dict, path: Path, volume_axes: bool) -> Path:
    """Closest (sample, training image) pairs side by side, correlation in the title; mid-slices for 3D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth.io import display_plane

    pairs = result["closest_pairs"]
    if not pairs:
        return path
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.6 * len(pairs) + 0.4, 4.0), squeeze=False)
    for k, p in enumerate(pairs):
        shown = ((samples[p["sample"]], f"sample {p['sample']}"), (train[p["train_index"]], f"train {p['train_index']}\nr = {p['correlation']:.3f}"))
        for row, (img, label) in enumerate(shown):
            ax = axes[row, k]
            ax.imshow(display_plane(img, volume_axes)[0], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7)
    fig.suptitle(f"closest sample / training pairs (threshold r >= {result['threshold']:.4f}, calibrated on val)", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
