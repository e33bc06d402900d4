"""Evaluating synthetic images against real held-out ones: `evaluate_run` (a trained run: sample, then
measure), `evaluate_samples` (a folder of images + a data config, no model) and the `evaluate` task behind
evaluate.py. Both write metrics.json, report.md and figures into a fresh folder.

How the rows are made comparable: with m = min(samples, held-out images, training images, max_images),
  synthetic     = m samples        vs  R (m real held-out images: val + test split)
  real_vs_real  = m training images vs R   (two disjoint sets of real images: the scale a perfect model reaches)
  noise_vs_real = m uniform-noise images in [-1, 1] vs R   (the scale of no model at all)
Every set-level metric of every row uses the same reference R and the same m."""
from __future__ import annotations

import json
import logging
import resource
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from synth.errors import SynthError
from synth.evaluation import distances, features, memorization
from synth.evaluation.samples import read_samples

ROW_METRICS = ("frd", "mmd", "first_order_wasserstein", "first_order_ks", "diversity_gap")  # lower is better


def _timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def _fresh_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").exists():
        raise SynthError(f"{out_dir} already holds an evaluation: it is never overwritten; pick another out_dir (or leave it unset)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _split_labels(dm, split: str) -> list[int]:
    ds = dm.datasets[split]
    if hasattr(ds, "labels"):
        return [int(v) for v in ds.labels]
    return [-1 if s.label is None else int(s.label) for s in ds.subjects]


def real_sets(dm, m_wanted: int | None, max_images: int, seed: int) -> dict:
    """Held-out pool (val + test), training images, and the size m every row compares."""
    dm.setup()
    held_out = torch.cat([dm.images("val"), dm.images("test")]).numpy()
    train = dm.images("train").numpy()
    if len(held_out) < 2:
        raise SynthError(
            f"data {dm.name} has {len(held_out)} held-out (val + test) image(s) but evaluation needs >= 2: "
            "give it more subjects or larger held-out fractions (e.g. data.split=[0.6,0.2,0.2])"
        )
    rng = np.random.default_rng(seed)
    if len(held_out) > max_images:
        held_out = held_out[np.sort(rng.choice(len(held_out), max_images, replace=False))]
    m = min(len(held_out), len(train), max_images, m_wanted or max_images)
    if m < 2:
        raise SynthError(f"only {m} image(s) per set (held-out {len(held_out)}, train {len(train)}, samples {m_wanted}): evaluation needs >= 2 of each")
    return {
        "held_out": held_out,
        "train": train,
        "m": m,
        "reference": held_out[np.sort(rng.choice(len(held_out), m, replace=False))],
        "train_half": train[np.sort(rng.choice(len(train), m, replace=False))],
        "noise": rng.uniform(-1, 1, size=(m, *held_out.shape[1:])).astype(np.float32),
    }


def _row(name: str, x: np.ndarray, ref: dict, spatial_dims: int, fo_names: list[str], seed: int) -> tuple[dict, dict, dict]:
    """One row: set-level distances of `x` to the reference, plus its per-feature distances and raw features."""
    fo, _, empty = features.first_order(x, spatial_dims, ref["threshold"], desc=f"first-order {name}")
    per_feature = distances.feature_distances(fo, ref["first_order"], fo_names)
    frd_value, dropped = features.frd(features.frd_features(x, spatial_dims, desc=f"FRD {name}"), ref["frd"])
    diversity = distances.pairwise_ms_ssim(x, spatial_dims, seed=seed)
    row = {
        "frd": frd_value,
        "mmd": distances.mmd(x, ref["images"]),
        "first_order_wasserstein": float(np.mean([v["wasserstein"] for v in per_feature.values()])),
        "first_order_ks": float(np.mean([v["ks"] for v in per_feature.values()])),
        "diversity_gap": abs(diversity - ref["diversity"]),
        "ms_ssim_diversity": diversity,
        "n": int(len(x)),
        "frd_dropped_images": dropped,
        "empty_foreground_images": empty,
    }
    return row, per_feature, {"first_order": fo}


def _reconstruction(model, held_out: np.ndarray, spatial_dims: int, batch_size: int, seed: int) -> dict:
    from synth.models.metrics import psnr, ssim

    def scores(pred_fn) -> dict:
        total = {"ssim": 0.0, "psnr": 0.0, "mae": 0.0}
        for k in range(0, len(held_out), batch_size):
            x = torch.as_tensor(held_out[k:k + batch_size]).to(model.device)
            y = pred_fn(x, k).float()
            total["ssim"] += float(ssim(y, x, spatial_dims)) * len(x)
            total["psnr"] += float(psnr(y, x)) * len(x)
            total["mae"] += float((y - x).abs().mean()) * len(x)
        return {k: v / len(held_out) for k, v in total.items()}

    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        result = scores(lambda x, k: model.reconstruct(x).clamp(-1, 1))
        noise = scores(lambda x, k: (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device))
    return {**result, "n": int(len(held_out)), "split": "val + test", "noise_reference": noise,
            "perfect": {"ssim": 1.0, "psnr": float("inf"), "mae": 0.0}}


def measure(
    samples: np.ndarray | None,   # (N, C, *S) in [-1, 1]; None: a model that cannot sample (rows for the scale only)
    dm,                           # the data module of the real images (set up or not)
    out_dir: Path,
    info: dict,                   # run_dir, model, family, data ... copied into metrics.json
    cost: dict,
    model=None,                   # a module with `reconstruct` adds reconstruction metrics
    seed: int = 0,
    max_images: int = 256,
    foreground_threshold: float = 0.1,
    memorization_threshold: float = 0.95,
    pairs: int = 8,
    batch_size: int = 16,
) -> dict:
    """Every metric, written as metrics.json + report.md + figures into `out_dir` (which must be fresh)."""
    from synth.evaluation import report

    out_dir = _fresh_dir(out_dir)
    start = time.perf_counter()
    sets = real_sets(dm, None if samples is None else len(samples), max_images, seed)
    shape = tuple(sets["held_out"].shape[1:])
    spatial_dims = len(shape) - 1
    if samples is not None and tuple(samples.shape[1:]) != shape:
        raise SynthError(f"samples have shape {list(samples.shape[1:])} but the real images {list(shape)}: evaluate samples against the data they were generated for")
    m = sets["m"]
    fo_ref, fo_names, empty_ref = features.first_order(sets["reference"], spatial_dims, foreground_threshold, desc="first-order real")
    ref = {
        "images": sets["reference"], "threshold": foreground_threshold, "first_order": fo_ref,
        "frd": features.frd_features(sets["reference"], spatial_dims, desc="FRD real"),
        "diversity": distances.pairwise_ms_ssim(sets["reference"], spatial_dims, seed=seed),
    }
    compared = {"synthetic": None if samples is None else samples[:m], "real_vs_real": sets["train_half"], "noise_vs_real": sets["noise"]}
    rows, per_feature, raw = {}, {}, {"reference_first_order": fo_ref}
    for name, x in compared.items():
        if x is None:
            rows[name] = None
            continue
        rows[name], per_feature[name], raw[name] = _row(name, x, ref, spatial_dims, fo_names, seed)

    mem, mem_raw = (None, None)
    if samples is not None:
        mem, mem_raw = memorization.audit(samples, sets["train"], sets["held_out"], sets["noise"], memorization_threshold, pairs)
    recon = _reconstruction(model, sets["held_out"], spatial_dims, batch_size, seed) if model is not None and hasattr(model, "reconstruct") else None

    metrics = {
        **info,
        "spatial_dims": spatial_dims,
        "image_shape": list(shape),
        "n_real": int(m),
        "n_samples": 0 if samples is None else int(len(samples)),
        "rows": rows,
        "reconstruction": recon,
        "memorization": mem,
        "cost": cost,
        "features": per_feature,
        "reference": {
            "n_per_set": int(m),
            "held_out_pool": int(len(sets["held_out"])),
            "train_pool": int(len(sets["train"])),
            "ms_ssim_diversity_real": ref["diversity"],
            "ms_ssim": distances.ms_ssim_settings(shape[1:]),
            "foreground_threshold": foreground_threshold,
            "empty_foreground_images": empty_ref,
            "seed": seed,
        },
        "eval_seconds": None,
        "out_dir": str(out_dir),
    }
    from synth.io import is_volume_axes

    arrays = {"samples": samples, **sets, "volume_axes": is_volume_axes(dm.meta), "raw": raw, "memorization": mem_raw, "feature_names": fo_names}
    report.write(out_dir, metrics, arrays)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return metrics


def _json_default(value: Any):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "cuda max allocated during sampling"
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process peak RSS (CPU; includes data and libraries)"


@torch.no_grad()  # not torch.set_grad_enabled(False): that would leak into the next job of an in-process multirun
def evaluate_run(
    run_dir: Path,
    n: int | None = None,         # samples to generate (None: as many as the real reference set)
    batch_size: int = 16,
    device: str = "auto",
    out_dir: Path | None = None,  # None: <run>/eval/<time>/
    seed: int = 0,
    ckpt: str = "last",
    samples: Path | None = None,  # evaluate these existing samples of the run instead of generating
    max_images: int = 256,
    foreground_threshold: float = 0.1,
    memorization_threshold: float = 0.95,
    pairs: int = 8,
    **sampler: Any,               # sampler / steps / guidance for diffusion models
) -> dict:
    """Sample a trained run (or read its samples) and evaluate against its own held-out data; returns the
    metrics.json content."""
    from hydra.utils import instantiate

    from synth.runs import resolve_run_dir
    from synth.sampling import pick_device, write_samples
    from synth.runs import load_run

    run_dir = Path(resolve_run_dir(str(run_dir)))
    model, train_cfg = load_run(run_dir, ckpt)
    dev = pick_device(device)
    model.to(dev)
    out_dir = _fresh_dir(Path(out_dir) if out_dir is not None else run_dir / "eval" / _timestamp())
    dm = instantiate(train_cfg.data)
    dm.setup()
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    shape = tuple(model.image_shape)
    info = {"run_dir": str(run_dir), "model": train_cfg.model.name, "family": model.family, "data": dm.name, "samples_dir": None}
    cost = {"seconds_per_sample": None, "batch_size": None, "device": str(dev), "parameters": int(model.n_parameters),
            "peak_memory_mb": None, "peak_memory_kind": None, "train_seconds": run_info.get("train_seconds")}
    images = None
    if samples is not None:
        images, sample_info = read_samples(Path(samples), shape)
        info["samples_dir"] = str(Path(samples).resolve())
        if sample_info:
            cost.update(seconds_per_sample=sample_info.get("seconds_per_sample"), batch_size=sample_info.get("batch_size"),
                        device=sample_info.get("device"), peak_memory_mb=sample_info.get("peak_gpu_memory_mb"),
                        peak_memory_kind="cuda max allocated during sampling" if sample_info.get("peak_gpu_memory_mb") else None)
    elif model.can_sample:
        if n is None:
            dm_sizes = len(dm.images("val")) + len(dm.images("test"))
            n = max(2, min(dm_sizes, len(dm.images("train")), max_images))
        condition = None
        if model.conditional:
            labels = [v for v in _split_labels(dm, "val") + _split_labels(dm, "test") if v >= 0] or [v for v in _split_labels(dm, "train") if v >= 0]
            condition = [labels[k % len(labels)] for k in range(n)]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        sample_info = write_samples(model, out_dir / "samples", n=int(n), batch_size=int(batch_size), seed=seed, condition=condition, **sampler)
        images, _ = read_samples(out_dir / "samples", shape)
        peak, kind = _peak_memory(dev)
        cost.update(seconds_per_sample=sample_info["seconds_per_sample"], batch_size=int(batch_size), peak_memory_mb=peak, peak_memory_kind=kind)
        info["samples_dir"] = str(out_dir / "samples")
        info["sampler"] = sample_info["sampler"]
    return measure(images, dm, out_dir, info, cost, model=model, seed=seed, max_images=max_images, foreground_threshold=foreground_threshold,
                   memorization_threshold=memorization_threshold, pairs=pairs, batch_size=int(batch_size))


def evaluate_samples(
    samples: Path,                # a folder of NIfTI / PNG samples
    data: DictConfig | dict,      # the data config (conf/data/<name>.yaml, composed) of the real images
    out_dir: Path,
    seed: int = 0,
    normalize_samples: bool = False,
    max_images: int = 256,
    foreground_threshold: float = 0.1,
    memorization_threshold: float = 0.95,
    pairs: int = 8,
) -> dict:
    """Evaluate a folder of images against the held-out split of a data config; no model needed."""
    from hydra.utils import instantiate

    dm = instantiate(data)
    dm.setup()
    shape = (dm.channels, *dm.image_size)
    images, sample_info = read_samples(Path(samples), shape, normalize=normalize_samples)
    sample_info = sample_info or {}
    info = {"run_dir": None, "model": sample_info.get("model", "samples"), "family": "samples", "data": dm.name,
            "samples_dir": str(Path(samples).resolve())}
    cost = {"seconds_per_sample": sample_info.get("seconds_per_sample"), "batch_size": sample_info.get("batch_size"),
            "device": sample_info.get("device"), "parameters": None, "peak_memory_mb": sample_info.get("peak_gpu_memory_mb"),
            "peak_memory_kind": "cuda max allocated during sampling" if sample_info.get("peak_gpu_memory_mb") else None, "train_seconds": None}
    return measure(images, dm, out_dir, info, cost, seed=seed, max_images=max_images, foreground_threshold=foreground_threshold,
                   memorization_threshold=memorization_threshold, pairs=pairs)


def evaluate(cfg: DictConfig) -> dict:
    """The evaluate.py task: `run_dir=<run>` (sample + evaluate) or `samples=<folder> data=<data config>`."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("real") is not None:
        raise SynthError(f"real={cfg.real}: name the real data with the data config group, as train.py does: data={cfg.real} (plus data.… overrides)")
    if cfg.run_dir is None and cfg.samples is None:
        raise SynthError("nothing to evaluate: pass run_dir=<run dir> (or run_dir=latest), or samples=<folder> data=<data config>")
    if cfg.run_dir is not None and cfg.get("data") is not None:
        raise SynthError("run_dir= evaluates against the run's own data (its config.yaml): drop data=… (use samples=<folder> data=… for other data)")
    if cfg.run_dir is None and cfg.get("data") is None:
        raise SynthError(f"samples={cfg.samples} needs the real data to compare with: add data=<data config> (e.g. data=phantom data.spatial_dims=3)")
    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    common = dict(seed=int(cfg.seed), max_images=int(cfg.max_images), foreground_threshold=float(cfg.foreground_threshold),
                  memorization_threshold=float(cfg.memorization.threshold), pairs=int(cfg.memorization.pairs))
    if cfg.run_dir is not None:
        sampler = {k: cfg[k] for k in ("sampler", "steps", "guidance") if cfg.get(k) is not None}
        metrics = evaluate_run(cfg.run_dir, n=cfg.n, batch_size=int(cfg.batch_size), device=str(cfg.device), out_dir=out_dir,
                               ckpt=str(cfg.ckpt), samples=cfg.samples, **common, **sampler)
    else:
        metrics = evaluate_samples(cfg.samples, cfg.data, out_dir, normalize_samples=bool(cfg.normalize_samples), **common)
    syn = metrics["rows"]["synthetic"] or {}
    rr, nz = metrics["rows"]["real_vs_real"], metrics["rows"]["noise_vs_real"]
    logging.getLogger(__name__).info(f"FRD {syn.get('frd', float('nan')):.3f} (real vs real {rr['frd']:.3f}, noise {nz['frd']:.3f}); report: {out_dir / 'report.md'}")
    return metrics

