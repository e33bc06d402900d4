"""report.md for one evaluation: the verdict and its reasons, what R is (test split, size, fingerprint), every
set-level number with its 95 % interval beside the real-vs-real and noise rows, per-class rows, first-order
features, reconstruction, the memorization audit with how its threshold was calibrated, cost, and how the
numbers are made. Figures come from figures.py."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

ROWS = ("synthetic", "real_vs_real", "noise_vs_real")
METRIC_TEXT = {  # name -> (label, direction / meaning)
    "frd": ("FRD (Fréchet Radiomics Distance, frd-score v1)", "lower is better; log of the squared Fréchet distance of radiomic features z-scored by R"),
    "mmd_rbf": ("MMD, Gaussian kernel on pixels", "lower is better; sees collapse and missing modes; unbiased, about 0 (can be slightly negative) for matching sets"),
    "mmd": ("MMD, linear kernel on pixels (mean image only)", "lower is better; compares mean images only: blind to collapse"),
    "first_order_wasserstein": ("first-order features: mean Wasserstein", "lower is better; per feature in units of R's SD"),
    "first_order_ks": ("first-order features: mean KS statistic", "lower is better; 0 = same distribution, 1 = disjoint"),
    "diversity_gap": ("MS-SSIM diversity gap", "lower is better; |mean pairwise MS-SSIM of the set - that of R|"),
    "ms_ssim_diversity": ("mean pairwise MS-SSIM (diversity)", "nearest R's is best; high = images alike (collapse), low = varied"),
    "sharpness_ratio": ("sharpness / R's", "1 is best; < 1 blurry, > 1 noisy (mean |Laplacian| / intensity SD)"),
}


def fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def with_ci(row: dict | None, key: str) -> str:
    """'value [lo, hi]' (the 95 % interval), or the value alone when there is none."""
    if row is None:
        return "—"
    ci = (row.get("ci") or {}).get(key)
    return fmt(row.get(key)) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def write(out_dir: Path, metrics: dict, arrays: dict) -> Path:
    """Figures into out_dir, then report.md that shows them."""
    from synth.evaluation.figures import write_all

    out_dir = Path(out_dir)
    write_all(out_dir, metrics, arrays)
    path = out_dir / "report.md"
    path.write_text(markdown(metrics))
    return path


def markdown(m: dict) -> str:
    rows, ref = m["rows"], m["reference"]
    dims = "3D (figures: mid axial slices)" if m["spatial_dims"] == 3 else "2D"
    v = m.get("verdict") or {"label": "—", "reasons": []}
    lines = [
        f"# Evaluation: {m['model']} ({m['family']}) on {m['data']}",
        "",
        f"- run: `{m['run_dir']}`" if m["run_dir"] else f"- samples: `{m['samples_dir']}` (no model)",
        f"- images: {dims}, shape {m['image_shape']} (channels first); {m['n_samples']} samples" + (f" in `{m['samples_dir']}`" if m["run_dir"] and m["samples_dir"] else ""),
        f"- compared with: the **{ref['split']} split** ({ref['n_per_set']} of its {ref['split_size']} images; reference fingerprint `{ref['fingerprint']}`). "
        "The val split is never scored on: it selects best-*.ckpt, drives sweeps and calibrates the memorization threshold.",
        f"- written {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"## Verdict: **{v['label']}**",
        "",
        *[f"- {r}" for r in v["reasons"]],
        "",
        "## Realism and diversity",
        "",
        f"Every row compares **{ref['n_per_set']} images with the same real reference set R** ({ref['n_per_set']} test-split images"
        + (f"; per class: {', '.join(f'{_class(m, c)} {k}' for c, k in ref['class_counts'].items())}" if ref.get("class_counts") else "") + f"). *synthetic* = {ref['n_per_set']} samples"
        + (" in R's class mix" if m.get("per_class") else "") + f"; *real vs real* = {ref['n_per_set']} training images (of {ref['train_pool']}) in R's class mix, "
        "the value a model that reproduces its training data would reach; *noise vs real* = uniform noise in [-1, 1], the value of no model at all. "
        f"Brackets: 95 % bootstrap intervals over images ({m['bootstrap']['draws']} draws, both sets resampled). "
        "**A difference is real only where the intervals do not overlap**; with few images they are wide.",
        "",
        "| metric | synthetic | real vs real | noise vs real | direction |",
        "|---|---|---|---|---|",
    ]
    for key, (label, direction) in METRIC_TEXT.items():
        lines.append(f"| {label} | " + " | ".join(with_ci(rows[r], key) for r in ROWS) + f" | {direction} |")
    lines.append("| images left out of FRD (features failed) | " + " | ".join(
        "—" if rows[r] is None else f"{rows[r]['frd_dropped_images']} of {rows[r]['n']}" for r in ROWS) + " | images whose radiomic features could not be computed |")
    f, ms = m["frd"], ref["ms_ssim"]
    div_ci = ref.get("ms_ssim_diversity_real_ci")
    lines += [
        "",
        f"Real reference diversity (mean pairwise MS-SSIM of R): **{fmt(ref['ms_ssim_diversity_real'])}**"
        + (f" [{fmt(div_ci[0])}, {fmt(div_ci[1])}]" if div_ci else "") + ". "
        + (f"MS-SSIM uses {ms['scales']} scales and a {ms['kernel_size']}-voxel kernel to fit the image size"
           if ms["scales"] > 1 else f"The images are too small for two MS-SSIM scales: plain SSIM ({ms['kernel_size']}-voxel kernel) is used")
        + " (images mapped to [0, 1], data range 1).",
        f"FRD feature set: {f['columns_kept']} of {f['columns_total']} radiomic columns ({f.get('columns_constant_in_reference', 0)} of them "
        f"constant over R, with an SD floor), chosen and z-scored from R alone and shared by every row and class "
        f"(fingerprint `{f['fingerprint']}`; runs in one comparison must share it).",
        *[f"Note: {n}" for n in ref.get("notes") or []],
        "",
    ]
    if rows["synthetic"] is not None:
        lines += ["| synthetic | real (R) |", "|---|---|", "| ![samples](samples.png) | ![real](real.png) |", ""]
    else:
        lines += ["This model cannot sample on its own (a VQ-VAE generates through latent diffusion): only the reference rows are shown.", "", "![real](real.png)", ""]
    lines += _per_class_section(m) + _feature_section(m) + _recon_section(m) + _memorization_section(m) + _cost_section(m)
    if m.get("downstream"):
        if m["downstream"].get("task") == "classification":
            from synth.evaluation.downstream_classification import section
        else:
            from synth.evaluation.downstream import section
        lines += section(m["downstream"])
    lines += _method_section(m)
    return "\n".join(lines)


def _class(m: dict, c: str) -> str:
    pc = (m.get("per_class") or {}).get(c)
    return pc["name"] if pc else f"class {c}"


def _per_class_section(m: dict) -> list[str]:
    pc = m.get("per_class")
    if not pc:
        return []
    lines = ["## Per class", "",
             "Each class's samples and training images against R's images of that class, in the same FRD feature space and kernel.", "",
             "| class | n real | FRD synthetic | FRD real vs real | RBF-MMD synthetic | RBF-MMD real vs real | MS-SSIM diversity synthetic | left out of FRD |",
             "|---|---|---|---|---|---|---|---|"]
    for c, e in pc.items():
        s, r = e["synthetic"], e["real_vs_real"]
        lines.append(f"| {e['name']} ({c}) | {e['n_real']} | {with_ci(s, 'frd')} | {with_ci(r, 'frd')} | {with_ci(s, 'mmd_rbf')} | "
                     f"{with_ci(r, 'mmd_rbf')} | {with_ci(s, 'ms_ssim_diversity')} | {s['frd_dropped_images']} of {s['n']} |")
    return lines + [""]


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
        lines.append(f"| {name} | " + " | ".join(fmt(feats[r][name]["wasserstein"]) for r in head) + " | "
                     + " | ".join(fmt(feats[r][name]["ks"]) for r in head) + " |")
    return lines + ["", "![first-order feature histograms](features.png)", ""]


def _recon_section(m: dict) -> list[str]:
    r = m["reconstruction"]
    if r is None:
        return []
    nz = r["noise_reference"]
    return [
        "## Reconstruction (autoencoder)",
        "",
        f"Encode-decode of the {r['n']} images of R ({r['split']} split); {r['range']}. A perfect reconstruction has SSIM 1, PSNR inf, "
        "MAE 0; the noise row replaces the reconstruction with uniform noise. Brackets: 95 % bootstrap intervals over images.",
        "",
        "| | SSIM (higher better) | PSNR dB (higher better) | MAE (lower better) |",
        "|---|---|---|---|",
        f"| model | {with_ci(r, 'ssim')} | {with_ci(r, 'psnr')} | {with_ci(r, 'mae')} |",
        f"| noise | {with_ci(nz, 'ssim')} | {with_ci(nz, 'psnr')} | {with_ci(nz, 'mae')} |",
        "",
    ]


def _memorization_section(m: dict) -> list[str]:
    mem = m["memorization"]
    if mem is None:
        return []
    cal = mem["calibration"]
    ctr = mem["closer_than_real"]
    lines = [
        "## Memorization audit",
        "",
        f"For every image, its highest Pearson correlation with any of the {mem['n_train']} training images. "
        f"**Threshold r >= {mem['threshold']:.4f}, calibrated on held-out real data**: the {cal['quantile']:g} quantile of the "
        f"nearest-training correlations of the {cal['n']} images of the **{cal['split']} split**; checked on the test split, "
        f"where {fmt(cal['check_fraction_test'])} of the images lie above (expected about {fmt(cal['expected_false_rate'])}: "
        f"max(1 - quantile, 1 / (n + 1)) for n = {cal['n']} calibration images). "
        "A sample above it is closer to a training image than almost every unseen real image is: a likely copy. "
        "Brackets: Wilson 95 % intervals.",
        "",
        "| set | n | mean | median | 95th pct | max | fraction at or above the threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("synthetic", "synthetic"), ("real_held_out", "real test (unseen)"), ("real_val", "real val (calibration)"), ("noise", "noise")):
        s = mem[name]
        ci = s.get("fraction_above_ci")
        lines.append(f"| {label} | {s['n']} | {fmt(s['mean'])} | {fmt(s['quantiles']['q50'])} | {fmt(s['quantiles']['q95'])} | {fmt(s['max'])} | "
                     f"{fmt(s['fraction_above'])}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "") + " |")
    lines += ["", f"Samples vs unseen test images (a whole-set form of Meehan et al. 2020's C_T test): AUC {fmt(ctr['auc'])} "
              f"(one-sided Mann-Whitney p = {ctr['p_value']:.3g}); {ctr['meaning']}.", ""]
    auth = mem.get("closer_than_training_neighbours") or {}
    if auth:
        syn, real = auth["synthetic"], auth["real_held_out"]
        lines += [f"Closer to their nearest training image than that image is to its nearest other training image "
                  f"(Alaa et al. 2022's authenticity): {syn['n_closer']} of {syn['n']} samples ({fmt(syn['fraction'])} "
                  f"[{fmt(syn['ci'][0])}, {fmt(syn['ci'][1])}]), {real['n_closer']} of {real['n']} unseen test images "
                  f"({fmt(real['fraction'])} [{fmt(real['ci'][0])}, {fmt(real['ci'][1])}]).", ""]
    return lines + ["![closest pairs](nearest_pairs.png)", "", "![nearest-neighbour correlations](memorization.png)", ""]


def _cost_section(m: dict) -> list[str]:
    cost = m["cost"]
    return [
        "## Cost",
        "",
        "| seconds / sample | batch size | device | parameters | peak memory (MB) | train time (s) |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join([fmt(cost["seconds_per_sample"]), fmt(cost["batch_size"]), fmt(cost["device"]),
                           f"{cost['parameters']:,}" if cost.get("parameters") is not None else "—",
                           fmt(cost["peak_memory_mb"]), fmt(cost["train_seconds"])]) + " |",
        "",
        f"Seconds per sample: wall time of batched generation divided by the number of samples. Peak memory: {cost.get('peak_memory_kind') or 'not recorded'}.",
        "",
    ]


def _method_section(m: dict) -> list[str]:
    ref, rows = m["reference"], m["rows"]
    return [
        "## How these numbers are made",
        "",
        "- FRD: the frd-score package (v1): pyradiomics features of the Original, LoG (sigma 2-5) and Wavelet images "
        "(first-order, GLCM, GLRLM, GLSZM, NGTDM), log of the squared Fréchet distance. The kept columns (finite for every image "
        "of R) and their z-scoring (R's mean and SD) come from R alone, so every row, class and run on the same R uses one "
        "feature set. Unlike frd-score, a column constant over R is kept with an SD floor of max(1, 0.1 % of its value): "
        "frd-score normalises each image, so the image minimum / maximum / mean are its only intensity-scale columns, and "
        "dropping the constant ones made FRD blind to a set 20x off in intensity. Images are passed in memory on their own pixel grid (unit spacing, no resampling to 2 mm), over the whole image. "
        "Images whose features fail are left out and counted in the table. Texture dominates FRD: read it beside diversity and sharpness.",
        f"- MMD: unbiased MMD^2 per pixel; Gaussian kernel exp(-d^2 / {fmt(ref.get('rbf_bandwidth'))}) with the bandwidth set from R "
        "(median squared distance between its images), and MONAI's linear kernel, which compares mean images only.",
        f"- First-order features: pyradiomics `firstorder` per image inside the foreground (grey level > {ref['foreground_threshold']} "
        "of the [-1, 1] range mapped to 0-255; bin width 8). An image with no foreground is measured over the whole image "
        f"(real: {ref['empty_foreground_images']}, synthetic: {fmt((rows['synthetic'] or {}).get('empty_foreground_images'))}).",
        f"- MS-SSIM (MONAI) on images mapped to [0, 1] with data range 1; diversity = mean over up to {ref.get('max_pairs', '—')} pairs of one set.",
        f"- Intervals: {m['bootstrap']['draws']} draws; {m['bootstrap']['method']}. Sets are drawn with seed {ref['seed']}.",
        "- Verdict: decided from the intervals (synth.evaluation.verdict; the rules are in synth/evaluation/verdicts.py).",
        "",
    ]
