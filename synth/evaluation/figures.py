"""The figures of report.md: sample and real grids, first-order feature histograms (real test images, real
training images, samples), the memorization histogram with its calibrated threshold, the closest pairs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synth.io import save_grid


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def feature_histograms(arrays: dict, path: Path) -> Path:
    plt = _plt()
    names = arrays["feature_names"]
    raw = arrays["raw"]
    cols = 6
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.9 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols, k % cols]
        sets = [("real test (R)", raw["reference_first_order"][:, k], "tab:blue")]
        if "real_vs_real" in raw:
            sets.append(("real train", raw["real_vs_real"]["first_order"][:, k], "tab:green"))
        if "synthetic" in raw:
            sets.append(("synthetic", raw["synthetic"]["first_order"][:, k], "tab:red"))
        lo = min(float(v.min()) for _, v, _ in sets)
        hi = max(float(v.max()) for _, v, _ in sets)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 16)
        for label, values, color in sets:
            ax.hist(values, bins=bins, histtype="step" if label == "real train" else "stepfilled", alpha=0.45 if label != "real train" else 1,
                    color=color, label=label, density=True)
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=5)
    for k in range(len(names), rows * cols):
        axes[k // cols, k % cols].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle("first-order radiomic features inside the foreground (grey levels 0-255)", fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.9, bottom=0.05, top=0.9, wspace=0.3, hspace=0.55)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def memorization_histogram(raw: dict, threshold: float, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(min(-0.1, *(float(s.min()) for s, _ in raw.values())), 1.0, 41)
    labels = {"synthetic": "synthetic", "real_held_out": "real test (unseen)", "noise": "noise"}
    for (name, (scores, _)), color in zip(raw.items(), ("tab:red", "tab:blue", "tab:gray")):
        ax.hist(scores, bins=bins, alpha=0.5, color=color, label=labels.get(name, name), density=True)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.4f} (val-calibrated)")
    ax.set_xlabel("correlation with the nearest training image")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(out_dir: Path, metrics: dict, arrays: dict) -> dict:
    """Every figure into out_dir; returns {name: path}."""
    from synth.evaluation.memorization import save_pairs

    volume_axes = arrays.get("volume_axes", True)
    figs = {}
    if arrays["samples"] is not None:
        figs["samples"] = save_grid(arrays["samples"][:16], out_dir / "samples.png", volume_axes=volume_axes)
    figs["real"] = save_grid(arrays["reference"][:16], out_dir / "real.png", volume_axes=volume_axes)
    figs["features"] = feature_histograms(arrays, out_dir / "features.png")
    mem = metrics["memorization"]
    if mem is not None:
        figs["pairs"] = save_pairs(arrays["samples"], arrays["train"], mem, out_dir / "nearest_pairs.png", volume_axes)
        figs["memorization"] = memorization_histogram(arrays["memorization"], mem["threshold"], out_dir / "memorization.png")
    return figs
