"""Memorization audit: for every sample its most similar training image by Pearson correlation (all channels
and voxels, vectorised), the distribution of those scores, the fraction above a threshold, and a PNG of the
closest pairs. The same audit of held-out real images and of noise gives the scale: held-out images of a
smooth anatomy can be close to training ones without any copying."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _unit_rows(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(images).float().flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def nearest(queries: np.ndarray, train: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query its highest Pearson correlation with any training image, and that image's index."""
    t = _unit_rows(train)
    best, index = [], []
    for k in range(0, len(queries), chunk):
        corr = _unit_rows(queries[k:k + chunk]) @ t.T
        value, idx = corr.max(dim=1)
        best.append(value)
        index.append(idx)
    return torch.cat(best).numpy().astype(np.float64), torch.cat(index).numpy()


def summary(scores: np.ndarray, threshold: float) -> dict:
    q = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(scores) else [float("nan")] * 5
    return {
        "n": int(len(scores)),
        "fraction_above": float((scores >= threshold).mean()) if len(scores) else float("nan"),
        "mean": float(scores.mean()) if len(scores) else float("nan"),
        "max": float(scores.max()) if len(scores) else float("nan"),
        "quantiles": dict(zip(["q05", "q25", "q50", "q75", "q95"], [float(v) for v in q])),
    }


def audit(samples: np.ndarray, train: np.ndarray, held_out: np.ndarray, noise: np.ndarray, threshold: float = 0.95, pairs: int = 8) -> tuple[dict, dict]:
    """The audit as JSON (synthetic, real held-out and noise against the training images) and the raw scores
    and indices (for figures)."""
    raw = {name: nearest(x, train) for name, x in (("synthetic", samples), ("real_held_out", held_out), ("noise", noise))}
    order = np.argsort(-raw["synthetic"][0])[:pairs]
    result = {
        "similarity": "pearson correlation with the nearest training image",
        "threshold": float(threshold),
        "n_train": int(len(train)),
        **{name: summary(scores, threshold) for name, (scores, _) in raw.items()},
        "closest_pairs": [{"sample": int(i), "train_index": int(raw["synthetic"][1][i]), "correlation": float(raw["synthetic"][0][i])} for i in order],
    }
    return result, raw


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
    fig.suptitle(f"closest sample / training pairs (threshold r >= {result['threshold']})", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
