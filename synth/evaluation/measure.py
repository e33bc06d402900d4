"""`score_sets`: every metric of one evaluation, from image arrays; `measure`: the same written as metrics.json +
report.md + figures into a fresh folder.

  rows       synthetic / real_vs_real / noise_vs_real against the test-split reference R (reference.py), each
             metric with its 95 % bootstrap interval (scoring.py); all rows share R's FRD feature space
  per_class  for samples with known classes (conditional models): each class's samples and training images
             against R's images of that class, in the same feature space
  memorization, reconstruction (test split), cost, verdict (verdicts.py)
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synth.errors import SynthError
from synth.evaluation import bootstrap, distances, memorization, reference, scoring
from synth.evaluation.frd import digest
from synth.evaluation.verdicts import verdict

log = logging.getLogger(__name__)


def fresh_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").exists():
        raise SynthError(f"{out_dir} already holds an evaluation: it is never overwritten; pick another out_dir (or leave it unset)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float] | None]:
    idx = bootstrap.draws(len(values), n_boot, np.random.default_rng([seed, 3]))
    mean = float(values.mean())
    return mean, bootstrap.interval(values[idx].mean(axis=1), mean)


@torch.no_grad()
def reconstruction(model, images: np.ndarray, spatial_dims: int, batch_size: int, seed: int, n_boot: int) -> dict:
    """Encode-decode of the test images: SSIM, PSNR (on [0, 1], data range 1), MAE, each with its interval; and
    the same for uniform noise in place of the reconstruction."""
    g = torch.Generator().manual_seed(seed)
    model.eval()

    def scores(pred_fn) -> dict:
        per = {"ssim": [], "psnr": [], "mae": []}
        for k in range(0, len(images), batch_size):
            x = torch.as_tensor(images[k:k + batch_size]).to(model.device)
            y = pred_fn(x).float()
            per["ssim"].append(distances.ssim(y.cpu(), x.cpu(), spatial_dims))
            per["psnr"].append(distances.psnr(y.cpu(), x.cpu()))
            per["mae"].append((y - x).abs().flatten(1).mean(1).cpu())
        out, ci = {}, {}
        for key, parts in per.items():
            out[key], ci[key] = _mean_ci(torch.cat(parts).double().numpy(), n_boot, seed)
        return {**out, "ci": ci}

    result = scores(lambda x: model.reconstruct(x).clamp(-1, 1))
    noise = scores(lambda x: (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device))
    return {**result, "n": int(len(images)), "split": "test", "range": "SSIM and PSNR on images mapped to [0, 1], data range 1",
            "noise_reference": noise, "perfect": {"ssim": 1.0, "psnr": float("inf"), "mae": 0.0}}


def _per_class(scorer, syn_feats, syn_labels, rr_feats, sets, class_names) -> dict | None:
    if syn_labels is None or not sets.labelled:
        return None
    out = {}
    for c in sorted(set(int(v) for v in sets.reference_labels)):
        ri = np.flatnonzero(sets.reference_labels == c)
        xi = np.flatnonzero(syn_labels == c)
        ti = np.flatnonzero(sets.real_vs_real_labels == c)
        if min(len(ri), len(xi)) < 2:
            continue
        row, _ = scorer.score(syn_feats, xi, ri)
        rr, _ = scorer.score(rr_feats, ti, ri) if len(ti) >= 2 else (None, None)
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        out[str(c)] = {"name": name, "n_real": int(len(ri)), "synthetic": row, "real_vs_real": rr}
    return out or None


def _extract(name, x, sets, cache, **ex) -> scoring.SetFeatures:
    """scoring.extract, memoised in `cache` (keyed by the images and R) when one is given."""
    if cache is None:
        return scoring.extract(name, x, None if name == "real" else sets.reference, **ex)
    key = (digest(np.ascontiguousarray(x)), sets.fingerprint, name == "real")
    if key not in cache:
        cache[key] = scoring.extract(name, x, None if name == "real" else sets.reference, **ex)
    return cache[key]


def score_sets(
    samples: np.ndarray | None,     # (N, C, *S) in [-1, 1]; None: a model that cannot sample (reference rows only)
    sample_labels: np.ndarray | None,  # (N,) class of each sample (conditional models), else None
    sets: reference.RealSets,       # R (test split), reference rows, training and calibration images
    model=None,                     # a module with `reconstruct` adds reconstruction metrics
    class_names: list[str] | None = None,
    seed: int = 0,
    foreground_threshold: float = 0.1,
    memorization_quantile: float = 0.99,
    pairs: int = 8,
    batch_size: int = 16,
    n_boot: int = 500,              # bootstrap draws per interval
    max_pairs: int = 1000,          # MS-SSIM pairs per set (diversity)
    cache: dict | None = None,      # per-image features of sets already seen (several candidates against one R)
) -> tuple[dict, dict]:
    """Every metric (the metrics.json content, less run info and cost) and the arrays the figures need."""
    shape = tuple(sets.reference.shape[1:])
    spatial_dims = len(shape) - 1
    if samples is not None and tuple(samples.shape[1:]) != shape:
        raise SynthError(f"samples have shape {list(samples.shape[1:])} but the real images {list(shape)}: evaluate samples against the data they were generated for")
    syn, syn_labels, notes = (None, None, []) if samples is None else reference.select_synthetic(samples, sample_labels, sets)
    ex = dict(spatial_dims=spatial_dims, foreground_threshold=foreground_threshold, max_pairs=max_pairs, seed=seed)
    ref_feats = _extract("real", sets.reference, sets, cache, **ex)
    scorer = scoring.Scorer(ref_feats, ref_feats.names, n_boot=n_boot, seed=seed)
    compared = {"synthetic": syn, "real_vs_real": sets.real_vs_real, "noise_vs_real": sets.noise}
    feats, rows, per_feature = {}, {}, {}
    for name, x in compared.items():
        if x is None:
            rows[name] = None
            continue
        feats[name] = _extract(name, x, sets, cache, **ex)
        rows[name], per_feature[name] = scorer.score(feats[name])
        rows[name]["empty_foreground_images"] = feats[name].empty
    per_class = _per_class(scorer, feats["synthetic"], syn_labels, feats["real_vs_real"], sets, class_names) if syn is not None else None
    mem, mem_raw = (None, None)
    if samples is not None:
        mem, mem_raw = memorization.audit(samples, sets.train, sets.calibration, sets.reference, sets.noise, memorization_quantile, pairs)
    recon = (reconstruction(model, sets.reference, spatial_dims, batch_size, seed, n_boot)
             if model is not None and hasattr(model, "reconstruct") else None)
    diversity = scorer.reference_diversity()
    metrics = {
        "spatial_dims": spatial_dims,
        "image_shape": list(shape),
        "n_real": int(sets.m),
        "n_samples": 0 if samples is None else int(len(samples)),
        "rows": rows,
        "per_class": per_class,
        "reconstruction": recon,
        "memorization": mem,
        "features": per_feature,
        "reference": {
            **sets.describe(),
            "held_out_pool": int(sets.split_size),
            "ms_ssim_diversity_real": diversity["value"],
            "ms_ssim_diversity_real_ci": diversity["ci"],
            "ms_ssim": distances.ms_ssim_settings(shape[1:]),
            "max_pairs": int(max_pairs),
            "rbf_bandwidth": scorer.bandwidth,
            "foreground_threshold": foreground_threshold,
            "empty_foreground_images": ref_feats.empty,
            "seed": seed,
            "notes": sets.notes + notes,
        },
        "frd": scorer.space.describe(),
        "bootstrap": {"draws": int(n_boot), "level": bootstrap.LEVEL,
                      "method": "bootstrap over images (both sets resampled, features computed once), 95 % spread of the draws "
                                "centred on the estimate; memorization fractions: Wilson interval"},
    }
    label, reasons = verdict(metrics)
    metrics["verdict"] = {"label": label, "reasons": reasons}
    arrays = {"samples": samples, "reference": sets.reference, "train": sets.train,
              "raw": {"reference_first_order": ref_feats.first_order, **{k: {"first_order": f.first_order} for k, f in feats.items()}},
              "memorization": mem_raw, "feature_names": ref_feats.names}
    return metrics, arrays


def measure(
    samples: np.ndarray | None,
    sample_labels: np.ndarray | None,
    sets: reference.RealSets,
    out_dir: Path,
    info: dict,                     # run_dir, model, family, data ... copied into metrics.json
    cost: dict,
    volume_axes: bool = True,       # figures: mid axial slices of volumes
    **options: Any,                 # score_sets' options (model, class_names, seed, n_boot, ...)
) -> dict:
    """score_sets, written as metrics.json + report.md + figures into `out_dir` (which must be fresh)."""
    from synth.evaluation import report

    out_dir = fresh_dir(out_dir)
    start = time.perf_counter()
    scored, arrays = score_sets(samples, sample_labels, sets, **options)
    metrics = {**info, **scored, "cost": cost, "eval_seconds": None, "out_dir": str(out_dir)}
    report.write(out_dir, metrics, {**arrays, "volume_axes": volume_axes})
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    log.info("verdict: %s", metrics["verdict"]["label"])
    return metrics


def _json_default(value: Any):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
