"""report.md and its figures for one evaluation: sample and real grids, real vs synthetic histograms of the
first-order radiomic features, nearest training neighbours and the memorization histogram."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np

from synth.io import save_grid

ROWS = ("synthetic", "real_vs_real", "noise_vs_real")
METRIC_TEXT = {  # name -> (label, direction / meaning)
    "frd": ("FRD (Fréchet Radiomics Distance, frd-score v1)", "lower is better; log of the squared Fréchet distance of z-scored radiomic features"),
    "mmd": ("MMD (MONAI, linear kernel, per pixel)", "lower is better; linear kernel, so it compares mean images only; unbiased, about 0 (can be slightly negative) for matching sets"),
    "first_order_wasserstein": ("first-order features: mean Wasserstein", "lower is better; per feature in units of the real features' SD"),
    "first_order_ks": ("first-order features: mean KS statistic", "lower is better; 0 = same distribution, 1 = disjoint"),
    "diversity_gap": ("MS-SSIM diversity gap", "lower is better; absolute difference between the mean pairwise MS-SSIM of the set and of the real reference"),
    "ms_ssim_diversity": ("mean pairwise MS-SSIM (diversity)", "closest to the real reference's value is best; high = images alike (mode collapse), low = varied"),
}


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _feature_histograms(arrays: dict, path: Path) -> None:
    plt = _plt()
    names = arrays["feature_names"]
    raw = arrays["raw"]
    cols = 6
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.9 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols, k % cols]
        sets = [("real held-out", raw["reference_first_order"][:, k], "tab:blue")]
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


def _memorization_histogram(raw: dict, threshold: float, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(min(-0.1, *(float(s.min()) for s, _ in raw.values())), 1.0, 41)
    for (name, (scores, _)), color in zip(raw.items(), ("tab:red", "tab:blue", "tab:gray")):
        ax.hist(scores, bins=bins, alpha=0.5, color=color, label=name.replace("_", " "), density=True)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel("correlation with the nearest training image")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(out_dir: Path, metrics: dict, arrays: dict) -> Path:
    """Figures into out_dir, then report.md that shows them."""
    from synth.evaluation.memorization import save_pairs

    out_dir = Path(out_dir)
    volume_axes = arrays.get("volume_axes", True)
    figures = {}
    if arrays["samples"] is not None:
        figures["samples"] = save_grid(arrays["samples"][:16], out_dir / "samples.png", volume_axes=volume_axes)
    figures["real"] = save_grid(arrays["reference"][:16], out_dir / "real.png", volume_axes=volume_axes)
    _feature_histograms(arrays, out_dir / "features.png")
    figures["features"] = out_dir / "features.png"
    mem = metrics["memorization"]
    if mem is not None:
        figures["pairs"] = save_pairs(arrays["samples"], arrays["train"], mem, out_dir / "nearest_pairs.png", volume_axes)
        _memorization_histogram(arrays["memorization"], mem["threshold"], out_dir / "memorization.png")
        figures["memorization"] = out_dir / "memorization.png"
    path = out_dir / "report.md"
    path.write_text(markdown(metrics))
    return path


def markdown(m: dict) -> str:
    rows, ref, cost = m["rows"], m["reference"], m["cost"]
    dims = "3D (figures: mid axial slices)" if m["spatial_dims"] == 3 else "2D"
    lines = [
        f"# Evaluation: {m['model']} ({m['family']}) on {m['data']}",
        "",
        f"- run: `{m['run_dir']}`" if m["run_dir"] else f"- samples: `{m['samples_dir']}` (no model)",
        f"- images: {dims}, shape {m['image_shape']} (channels first); {m['n_samples']} samples" + (f" in `{m['samples_dir']}`" if m["run_dir"] and m["samples_dir"] else ""),
        f"- written {datetime.now():%Y-%m-%d %H:%M}",
        "",
        "## Realism and diversity",
        "",
        f"Every row compares **{ref['n_per_set']} images with the same real reference set R**: {ref['n_per_set']} held-out images "
        f"(val + test split, drawn from {ref['held_out_pool']}). *synthetic* = {ref['n_per_set']} samples; *real vs real* = "
        f"{ref['n_per_set']} training images (of {ref['train_pool']}), the value a model that reproduces its training data would reach; "
        "*noise vs real* = uniform noise in [-1, 1], the value of no model at all. A good model sits near the real-vs-real row. "
        "With small sets every number is noisy: compare a model only with reference rows computed at the same size (as here).",
        "",
        "| metric | synthetic | real vs real | noise vs real | direction |",
        "|---|---|---|---|---|",
    ]
    for key, (label, direction) in METRIC_TEXT.items():
        vals = [_fmt((rows[r] or {}).get(key)) for r in ROWS]
        lines.append(f"| {label} | {vals[0]} | {vals[1]} | {vals[2]} | {direction} |")
    ms = ref["ms_ssim"]
    lines += [
        "",
        f"Real reference diversity (mean pairwise MS-SSIM of R): **{_fmt(ref['ms_ssim_diversity_real'])}**. "
        + (f"MS-SSIM uses {ms['scales']} scales and a {ms['kernel_size']}-voxel kernel to fit the image size."
           if ms["scales"] > 1 else f"The images are too small for two MS-SSIM scales: plain SSIM ({ms['kernel_size']}-voxel kernel) is used."),
        "",
    ]
    if "samples" in _figs(m):
        lines += ["| synthetic | real (R) |", "|---|---|", "| ![samples](samples.png) | ![real](real.png) |", ""]
    else:
        lines += ["This model cannot sample on its own (a VQ-VAE generates through latent diffusion): only the reference rows are shown.", "", "![real](real.png)", ""]
    lines += _feature_section(m) + _recon_section(m) + _memorization_section(m)
    lines += [
        "## Cost",
        "",
        "| seconds / sample | batch size | device | parameters | peak memory (MB) | train time (s) |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join([_fmt(cost["seconds_per_sample"]), _fmt(cost["batch_size"]), _fmt(cost["device"]),
                           f"{cost['parameters']:,}" if cost.get("parameters") is not None else "—",
                           _fmt(cost["peak_memory_mb"]), _fmt(cost["train_seconds"])]) + " |",
        "",
        f"Seconds per sample: wall time of batched generation divided by the number of samples. Peak memory: {cost.get('peak_memory_kind') or 'not recorded'}.",
        "",
        "## How these numbers are made",
        "",
        "- FRD: the frd-score package (v1): pyradiomics features of the Original, LoG (sigma 2-5) and Wavelet images "
        "(first-order, GLCM, GLRLM, GLSZM, NGTDM), z-scored with the real reference's statistics, NaN/Inf columns dropped, "
        "log of the squared Fréchet distance. Images are passed in memory on their own pixel grid (unit spacing, no resampling to 2 mm), "
        "over the whole image; columns whose real spread is float round-off are dropped like frd-score's constant columns. "
        "Texture dominates FRD: blurry samples (lost fine texture) can score worse than noise while looking closer to the real images.",
        f"- First-order features: pyradiomics `firstorder` per image inside the foreground (grey level > {ref['foreground_threshold']} "
        "of the [-1, 1] range mapped to 0-255; bin width 8). An image with no foreground is measured over the whole image "
        f"(real: {ref['empty_foreground_images']}, synthetic: {_fmt((rows['synthetic'] or {}).get('empty_foreground_images'))}).",
        "- MMD and MS-SSIM: MONAI metrics on the images in [-1, 1] (data range 2).",
        f"- Sets are drawn with seed {ref['seed']}; everything is recomputed the same way for the three rows.",
        "",
    ]
    return "\n".join(lines)


def _figs(m: dict) -> set:
    return {"samples"} if m["rows"]["synthetic"] is not None else set()


def _feature_section(m: dict) -> list[str]:
    feats = m["features"]
    if not feats:
        return []
    names = list(next(iter(feats.values())))
    head = [r for r in ROWS if r in feats]
    lines = [
        "## First-order radiomic features",
        "",
        "Per-feature distance to the real reference R: Wasserstein (in units of R's SD) and KS statistic.",
        "",
        "| feature | " + " | ".join(f"W {r.replace('_', ' ')}" for r in head) + " | " + " | ".join(f"KS {r.replace('_', ' ')}" for r in head) + " |",
        "|---|" + "---|" * (2 * len(head)),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt(feats[r][name]["wasserstein"]) for r in head) + " | "
                     + " | ".join(_fmt(feats[r][name]["ks"]) for r in head) + " |")
    return lines + ["", "![first-order feature histograms](features.png)", ""]


def _recon_section(m: dict) -> list[str]:
    r = m["reconstruction"]
    if r is None:
        return []
    nz = r["noise_reference"]
    return [
        "## Reconstruction (autoencoder)",
        "",
        f"Encode-decode of the {r['n']} held-out images ({r['split']}). A perfect reconstruction has SSIM 1, PSNR inf, MAE 0; "
        "the noise row replaces the reconstruction with uniform noise.",
        "",
        "| | SSIM (higher better) | PSNR dB (higher better) | MAE (lower better) |",
        "|---|---|---|---|",
        f"| model | {_fmt(r['ssim'])} | {_fmt(r['psnr'])} | {_fmt(r['mae'])} |",
        f"| noise | {_fmt(nz['ssim'])} | {_fmt(nz['psnr'])} | {_fmt(nz['mae'])} |",
        "",
    ]


def _memorization_section(m: dict) -> list[str]:
    mem = m["memorization"]
    if mem is None:
        return []
    lines = [
        "## Memorization audit",
        "",
        f"For every image, its highest Pearson correlation with any of the {mem['n_train']} training images. Held-out real images "
        "show how close an unseen real image naturally is; noise shows the floor. Samples far above the held-out values, "
        f"or many above r = {mem['threshold']}, suggest copies of training images.",
        "",
        f"| set | n | mean | median | 95th pct | max | fraction r >= {mem['threshold']} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("synthetic", "real_held_out", "noise"):
        s = mem[name]
        lines.append(f"| {name.replace('_', ' ')} | {s['n']} | {_fmt(s['mean'])} | {_fmt(s['quantiles']['q50'])} | "
                     f"{_fmt(s['quantiles']['q95'])} | {_fmt(s['max'])} | {_fmt(s['fraction_above'])} |")
    return lines + ["", "![closest pairs](nearest_pairs.png)", "", "![nearest-neighbour correlations](memorization.png)", ""]
