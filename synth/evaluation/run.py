"""Evaluating synthetic images against the real TEST split: `evaluate_run` (a trained run: sample, then
measure), `evaluate_samples` (a folder of images + a data config, no model) and the `evaluate` task behind
evaluate.py. Both write metrics.json, report.md and figures into a fresh folder (measure.py).

How the rows are made comparable (reference.py): with m = min(samples, test images, training images, max_images),
  synthetic     = m samples (in R's class mix when their classes are known)  vs  R (m test-split images)
  real_vs_real  = m training images in R's class mix vs R (two disjoint real sets: what a perfect model reaches)
  noise_vs_real = m uniform-noise images in [-1, 1] vs R (the scale of no model at all)
Every set-level metric of every row uses the same R, the same m and R's feature space, with a 95 % interval.
A conditional model samples R's labels, so its samples have R's class mix; per-class rows compare each class."""
from __future__ import annotations

import json
import logging
import resource
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from synth.errors import SynthError
from synth.evaluation import reference
from synth.evaluation.measure import fresh_dir, measure
from synth.evaluation.samples import read_samples
from synth.evaluation.scoring import ROW_METRICS  # noqa: F401  (re-exported: the lower-is-better row metrics)

log = logging.getLogger(__name__)


def _timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "cuda max allocated during sampling"
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process peak RSS (CPU; includes data and libraries)"


def _sample_labels(sample_info: dict | None, n: int) -> np.ndarray | None:
    """The class of each sample from samples.json's `condition` (one label for all, or one per sample)."""
    cond = (sample_info or {}).get("condition")
    if cond is None:
        return None
    if isinstance(cond, int):
        return np.full(n, cond, dtype=np.int64)
    if isinstance(cond, list) and len(cond) == n and all(isinstance(v, int) for v in cond):
        return np.asarray(cond, dtype=np.int64)
    return None


def _cost_from(sample_info: dict | None, cost: dict) -> dict:
    s = sample_info or {}
    return {**cost, "seconds_per_sample": s.get("seconds_per_sample"), "batch_size": s.get("batch_size"), "device": s.get("device", cost.get("device")),
            "peak_memory_mb": s.get("peak_gpu_memory_mb"), "peak_memory_kind": "cuda max allocated during sampling" if s.get("peak_gpu_memory_mb") else None}


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
    memorization_quantile: float = 0.99,
    pairs: int = 8,
    n_boot: int = 500,
    log_dir: str | Path | None = None,  # where `run_dir=latest` looks (paths.log_dir; default $PROJECT_ROOT/outputs)
    downstream: dict | None = None,  # conf/downstream/{segmentation,classification}.yaml: also train/test a network on real / synthetic data
    **sampler: Any,               # sampler / steps / guidance for diffusion models
) -> dict:
    """Sample a trained run (or read its samples) and evaluate against its own test split; returns the
    metrics.json content."""
    from hydra.utils import instantiate

    from synth.io import is_volume_axes
    from synth.runs import load_run, resolve_run_dir
    from synth.sampling import pick_device, write_samples

    run_dir = resolve_run_dir(str(run_dir), log_dir)
    model, train_cfg = load_run(run_dir, ckpt)
    dev = pick_device(device)
    model.to(dev)
    out_dir = fresh_dir(Path(out_dir) if out_dir is not None else run_dir / "eval" / _timestamp())
    dm = instantiate(train_cfg.data)
    dm.setup()
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    shape = tuple(model.image_shape)
    info = {"run_dir": str(run_dir), "model": train_cfg.model.name, "family": model.family, "data": dm.name, "samples_dir": None}
    cost = {"seconds_per_sample": None, "batch_size": None, "device": str(dev), "parameters": int(model.n_parameters),
            "peak_memory_mb": None, "peak_memory_kind": None, "train_seconds": run_info.get("train_seconds")}
    splits = reference.splits_from_datamodule(dm)
    images, labels, masks = None, None, None
    task = (downstream or {}).get("task")
    if task == "segmentation" and not model.mask_conditioned:
        raise SynthError(f"downstream=segmentation trains on synthetic (image, mask) pairs, but this {model.name} run draws no images for "
                         "masks: evaluate a model=controlnet run (or drop downstream=)")
    if task == "classification" and (not model.conditional or model.mask_conditioned):
        raise SynthError(f"downstream=classification trains on synthetic images of known classes, but this {model.name} run is not "
                         "class-conditional: evaluate a run trained with model.num_classes=<classes> on labelled data (or drop downstream=)")
    if task == "classification" and (len(splits["train"][1]) == 0 or (splits["train"][1] < 0).any()):
        raise SynthError("downstream=classification: the training split has images without a class label: use labelled data")
    if downstream is not None and n is None:
        n = int(downstream.get("n_synthetic") or len(dm.datasets["train"]))
    if samples is not None:
        images, sample_info = read_samples(Path(samples), shape, meta=dm.meta)
        info["samples_dir"] = str(Path(samples).resolve())
        if task == "segmentation":
            from synth.data.masks import paired_masks

            masks, masks_info = paired_masks(Path(samples), list(shape[1:]), len(images)), (sample_info or {}).get("masks") or {"source": str(samples)}
        labels = _sample_labels(sample_info, len(images))
        if sample_info:
            cost = _cost_from(sample_info, cost)
        sets = reference.real_sets(splits, len(images), max_images, seed)
    elif model.can_sample:
        sets = reference.real_sets(splits, n, max_images, seed)
        n = int(n or sets.m)
        condition = reference.sample_conditions(sets, n) if model.conditional else None
        if task == "classification":  # the training split's labels, in order (cycled): its class mix, never the test split's
            condition = [int(splits["train"][1][k % len(splits["train"][1])]) for k in range(n)]
        masks_info = None
        if model.mask_conditioned:  # images for masks of the training split (never the test masks)
            from synth.data.masks import training_masks

            condition, masks_info = training_masks(train_cfg.data, n, seed)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        sample_info = write_samples(model, out_dir / "samples", n=n, batch_size=int(batch_size), seed=seed, condition=condition,
                                    masks_info=masks_info, **sampler)
        images, _ = read_samples(out_dir / "samples", shape, meta=dm.meta)
        labels = None if condition is None or masks_info is not None else np.asarray(condition, dtype=np.int64)
        masks = condition if masks_info is not None else None
        peak, kind = _peak_memory(dev)
        cost.update(seconds_per_sample=sample_info["seconds_per_sample"], batch_size=int(batch_size), peak_memory_mb=peak, peak_memory_kind=kind)
        info["samples_dir"] = str(out_dir / "samples")
        info["sampler"] = sample_info["sampler"]
    else:
        sets = reference.real_sets(splits, None, max_images, seed)
    if task == "classification":
        from synth.evaluation.downstream_classification import classification

        if labels is None or (np.asarray(labels) < 0).any():
            raise SynthError(f"downstream=classification needs the class of every sample, but {info['samples_dir']} has no samples.json "
                             "`condition` list: evaluate samples that generate.py wrote for a conditional run (or drop samples=)")
        source = {"source": "the training split's class labels, cycled in order" if samples is None else f"the conditions in {info['samples_dir']}/samples.json",
                  "class_counts": {int(c): int(k) for c, k in zip(*np.unique(np.asarray(labels), return_counts=True))}}
        info["downstream"] = classification((torch.from_numpy(splits["train"][0]), torch.from_numpy(splits["train"][1])),
                                            (torch.from_numpy(splits["test"][0]), torch.from_numpy(splits["test"][1])),
                                            (torch.from_numpy(np.asarray(images, dtype=np.float32)), torch.as_tensor(np.asarray(labels), dtype=torch.long)),
                                            int(model.num_classes), dict(downstream), source, class_names=dm.meta.get("class_names"),
                                            seed=seed, n_boot=n_boot, device=dev)
    elif task == "segmentation":
        from synth.evaluation.downstream import segmentation

        info["downstream"] = segmentation((torch.from_numpy(splits["train"][0]), dm.mask_items("train")),
                                          (torch.from_numpy(splits["test"][0]), dm.mask_items("test")),
                                          (torch.from_numpy(np.asarray(images)), torch.as_tensor(np.asarray(masks))), dict(downstream),
                                          masks_info, seed=seed, n_boot=n_boot, device=dev)
    return measure(images, labels, sets, out_dir, info, cost, model=model, volume_axes=is_volume_axes(dm.meta),
                   class_names=dm.meta.get("class_names"), seed=seed, foreground_threshold=foreground_threshold,
                   memorization_quantile=memorization_quantile, pairs=pairs, batch_size=int(batch_size), n_boot=n_boot)


def evaluate_samples(
    samples: Path,                # a folder of NIfTI / PNG samples
    data: DictConfig | dict,      # the data config (conf/data/<name>.yaml, composed) of the real images
    out_dir: Path,
    seed: int = 0,
    normalize_samples: bool = False,
    max_images: int = 256,
    foreground_threshold: float = 0.1,
    memorization_quantile: float = 0.99,
    pairs: int = 8,
    n_boot: int = 500,
) -> dict:
    """Evaluate a folder of images against the test split of a data config; no model needed. Classes of the
    samples come from the folder's samples.json (`condition`) when generate.py wrote it."""
    from hydra.utils import instantiate

    from synth.io import is_volume_axes

    dm = instantiate(data)
    dm.setup()
    shape = (dm.channels, *dm.image_size)
    images, sample_info = read_samples(Path(samples), shape, normalize=normalize_samples, meta=dm.meta)
    info = {"run_dir": None, "model": (sample_info or {}).get("model", "samples"), "family": "samples", "data": dm.name,
            "samples_dir": str(Path(samples).resolve())}
    cost = _cost_from(sample_info, {"parameters": None, "train_seconds": None, "device": None})
    sets = reference.real_sets(reference.splits_from_datamodule(dm), len(images), max_images, seed)
    return measure(images, _sample_labels(sample_info, len(images)), sets, out_dir, info, cost, volume_axes=is_volume_axes(dm.meta),
                   class_names=dm.meta.get("class_names"), seed=seed, foreground_threshold=foreground_threshold,
                   memorization_quantile=memorization_quantile, pairs=pairs, n_boot=n_boot)


def evaluate(cfg: DictConfig) -> dict:
    """The evaluate.py task: `run_dir=<run>` (sample + evaluate) or `samples=<folder> data=<data config>`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from synth.config_check import validate

    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    validate(cfg, "evaluate", key=str(out_dir))  # (done already when the Hydra callback checked this command)
    if cfg.get("real") is not None:
        raise SynthError(f"real={cfg.real}: name the real data with the data config group, as train.py does: data={cfg.real} (plus data.… overrides)")
    if cfg.run_dir is None and cfg.samples is None:
        raise SynthError("nothing to evaluate: pass run_dir=<run dir> (or run_dir=latest), or samples=<folder> data=<data config>")
    if cfg.run_dir is not None and cfg.get("data") is not None:
        raise SynthError("run_dir= evaluates against the run's own data (its config.yaml): drop data=… (use samples=<folder> data=… for other data)")
    if cfg.run_dir is None and cfg.get("data") is None:
        raise SynthError(f"samples={cfg.samples} needs the real data to compare with: add data=<data config> (e.g. data=phantom data.spatial_dims=3)")
    if cfg.memorization.get("threshold") is not None:
        raise SynthError("memorization.threshold is no longer fixed: it is calibrated on the val split; set memorization.quantile (e.g. 0.99) instead")
    common = dict(seed=int(cfg.seed), max_images=int(cfg.max_images), foreground_threshold=float(cfg.foreground_threshold),
                  memorization_quantile=float(cfg.memorization.quantile), pairs=int(cfg.memorization.pairs), n_boot=int(cfg.bootstrap))
    if cfg.run_dir is not None:
        sampler = {k: cfg[k] for k in ("sampler", "steps", "guidance", "eta") if cfg.get(k) is not None}
        ds = cfg.get("downstream") or {}
        downstream = OmegaConf.to_container(ds, resolve=True) if ds.get("task") not in (None, "none") else None
        metrics = evaluate_run(cfg.run_dir, n=cfg.n, batch_size=int(cfg.batch_size), device=str(cfg.device), out_dir=out_dir,
                               ckpt=str(cfg.ckpt), samples=cfg.samples, log_dir=OmegaConf.select(cfg, "paths.log_dir"),
                               downstream=downstream, **common, **sampler)
    elif (cfg.get("downstream") or {}).get("task") not in (None, "none"):
        raise SynthError("downstream= trains on the samples of a conditional run: pass run_dir=<controlnet run> (segmentation) or "
                         "run_dir=<class-conditional run> (classification), with samples=<its samples> to reuse them")
    else:
        metrics = evaluate_samples(cfg.samples, cfg.data, out_dir, normalize_samples=bool(cfg.normalize_samples), **common)
    log.info(summary_line(metrics) + f"; report: {out_dir / 'report.md'}")
    return metrics


def summary_line(metrics: dict) -> str:
    """One line: the verdict; FRD with its interval beside the real-vs-real row (with its interval) and the noise
    row; the memorization verdict with the count of samples at or above the calibrated copy threshold."""
    from synth.evaluation.verdicts import copies

    syn = metrics["rows"]["synthetic"] or {}
    rr, nz = metrics["rows"]["real_vs_real"], metrics["rows"]["noise_vs_real"]

    def with_ci(row: dict) -> str:
        ci = (row.get("ci") or {}).get("frd")
        return f"{row.get('frd', float('nan')):.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    verdict = (metrics.get("verdict") or {}).get("label", "—")
    line = (f"verdict: {verdict}; FRD {with_ci(syn)} vs real-vs-real {with_ci(rr)}, noise {nz['frd']:.3f} "
            f"(95 % intervals; test split, {metrics['n_real']} images per set)")
    mem = metrics.get("memorization")
    if not mem:
        return line + "; memorization: not audited"
    s, cal = mem["synthetic"], mem.get("calibration") or {}
    return (line + f"; memorization: {'COPIES training images' if copies(mem) else 'no copies'} ({s['n_above']} of {s['n']} samples "
            f"at or above the calibrated threshold r = {mem['threshold']:.4f}; unseen real images: about {float(cal.get('expected_false_rate', 0)):.0%})")
