"""The tasks behind the entry scripts, as plain functions of a composed config (tests call them directly):
`train` (config -> checkpoints, run.json; `train_and_score` returns the metric a sweeper optimizes) and
`generate` (run dir -> samples). Run dirs, checkpoints and resuming belong to synth.runs; turning errors into one
line belongs to synth.cli."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from synth import runs, scale
from synth.checkpoint_io import AtomicCheckpointIO
from synth.checkpointing import startup_guard
from synth.config_check import validate
from synth.errors import SynthError
from synth.tracking import default_wandb_offline, finish_wandb

log = logging.getLogger(__name__)
info0 = rank_zero_only(log.info)  # DDP: rank 0 speaks for the run


def _instantiate_all(group: DictConfig | None) -> list:
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


@rank_zero_only
def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


@rank_zero_only
def _save_config(run_dir: Path, cfg: DictConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def optimized_value(cfg: DictConfig, metrics: dict) -> float | list[float] | None:
    """The value a sweeper optimizes: `metrics[cfg.optimized_metric]`, or one value per name when it is a list (a
    multi-objective sweep, e.g. [eval/frd, eval/seconds_per_sample]); a name the run never logged is an error."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    names = [str(n) for n in name] if OmegaConf.is_list(name) else [str(name)]
    for n in names:
        if n not in metrics:
            raise SynthError(f"optimized_metric={n} was not logged by this run (it has: {', '.join(sorted(metrics)) or 'nothing'}): pick one of those")
    values = [float(metrics[n]) for n in names]
    return values if OmegaConf.is_list(name) else values[0]


def train_and_score(cfg: DictConfig) -> float | None:
    """train.py's task: train, then return the metric a sweeper optimizes."""
    metrics, _ = train(cfg)
    return optimized_value(cfg, metrics)


def _prepare(cfg: DictConfig, run_dir: Path, resume: str | None):
    """Everything before the first training step: data, model, checks, trainer. A refusal here leaves no run."""
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    for key, value in getattr(model, "config_updates", {}).items():  # e.g. the absolute path of an autoencoder run
        OmegaConf.update(cfg, key, value)
    _save_config(run_dir, cfg)
    datamodule.setup("fit")
    meta = datamodule.meta
    if int(meta["channels"]) != model.image_shape[0]:
        raise SynthError(f"the data has {meta['channels']} channels but the model was built for {model.image_shape[0]}: set data.channels={meta['channels']}")
    model.data_meta = meta
    model.check_training_labels()
    if resume:
        runs.check_fits(model, runs.load_checkpoint(resume), resume, f"this run (model={cfg.model.name})")
    _write_json(run_dir / "data_meta.json", meta)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    default_wandb_offline()
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy=scale.strategy(cfg, model),
                          plugins=[AtomicCheckpointIO(), *scale.cluster_plugins()])
    return datamodule, model, trainer


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Compose data, model, trainer from `cfg`; fit; return (metrics, objects)."""
    scale.refuse_local_multirun_ddp(cfg)
    scale.pin_hydra_run_dir()
    run_dir = Path(cfg.paths.output_dir)
    in_place = scale.requeued_checkpoint(run_dir)
    if rank_zero_only.rank == 0:
        validate(cfg, "train", key=str(run_dir))  # (done already when the Hydra callback checked this run)
        runs.claim(run_dir, resume_in_place=in_place is not None)
    try:
        resume = in_place or runs.resolve_resume(cfg, run_dir)
        if resume and Path(resume).resolve().is_relative_to(run_dir.resolve()):
            scale.keep_csv_log(run_dir)
        datamodule, model, trainer = _prepare(cfg, run_dir, resume)
    except BaseException:
        if rank_zero_only.rank == 0 and runs.discard_unstarted(run_dir):
            log.debug(f"refused before training: removed {run_dir}")
        runs.release(run_dir)
        raise
    try:
        return _fit(cfg, run_dir, datamodule, model, trainer, resume)
    finally:
        runs.release(run_dir)


def _fit(cfg: DictConfig, run_dir: Path, datamodule, model, trainer, resume: str | None) -> tuple[dict, dict]:
    meta = datamodule.meta
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    info0(f"run dir: {run_dir}  |  {cfg.model.name} ({model.family}, {model.n_parameters:,} parameters) on {meta['name']} "
          f"{meta['image_size']}x{meta['channels']}ch, {meta['n_train']} train items" + (f"; resuming from {resume}" if resume else ""))
    start = time.perf_counter()
    with startup_guard(trainer):
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    train_seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    best_cb = trainer.checkpoint_callback
    best = best_cb.best_model_path if best_cb is not None and best_cb.best_model_path else None
    if cfg.get("test_after"):
        for result in trainer.test(model, datamodule=datamodule, ckpt_path="best" if best else None):
            metrics.update(result)
    info = {
        "model": cfg.model.name,
        "family": model.family,
        "data": meta["name"],
        "spatial_dims": model.spatial_dims,
        "image_shape": list(model.image_shape),
        "parameters": model.n_parameters,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_seconds": round(train_seconds, 2),
        "world_size": trainer.world_size,  # processes that trained (DDP ranks x nodes)
        "best_checkpoint": best,
        "metrics": metrics,
    }
    _write_json(run_dir / "run.json", info)
    if cfg.get("sample_after", 0) and trainer.is_global_zero:
        from synth.sampling import write_samples

        write_samples(model, run_dir / "samples" / "after_training", n=int(cfg.sample_after), seed=cfg.seed)
    info0(f"done: {trainer.global_step} steps in {train_seconds:.0f}s; checkpoints in {run_dir / 'checkpoints'}")
    if cfg.get("evaluate"):
        metrics.update(_evaluate_after(cfg, trainer, run_dir))
    finish_wandb(trainer.loggers)
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer, "run_dir": run_dir}


def _evaluate_after(cfg: DictConfig, trainer, run_dir: Path) -> dict:
    """`evaluate=true`: evaluate.py on the finished run (rank 0), its metrics sent to the run's loggers and
    returned as `eval/...` (a sweep may optimize them: optimized_metric=eval/frd)."""
    if not trainer.is_global_zero:
        return {}
    from synth.evaluation import evaluate_run, flat_metrics
    from synth.evaluation.run import summary_line
    from synth.tracking import log_evaluation

    out_dir = run_dir / "eval" / "after_training"
    result = evaluate_run(run_dir, n=cfg.get("evaluate_n"), out_dir=out_dir, seed=int(cfg.seed))
    flat = flat_metrics(result)
    log_evaluation(trainer.loggers, flat, trainer.global_step, out_dir)
    log.info(f"evaluation: {summary_line(result)}; report: {out_dir / 'report.md'}")
    return flat


# ----- generate -------------------------------------------------------------------------------------------
@torch.no_grad()  # scoped: a global switch would leak into whatever runs next in this process
def generate(cfg: DictConfig) -> dict:
    """Sample `cfg.n` images from a run into <run>/samples/<time>/ (Hydra's run dir for this job)."""
    from synth.sampling import pick_device, write_samples

    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    validate(cfg, "generate", key=str(out_dir))
    run_dir = runs.resolve_run_dir(cfg.run_dir, OmegaConf.select(cfg, "paths.log_dir"))
    model, train_cfg = runs.load_run(run_dir, cfg.ckpt)
    model.to(pick_device(cfg.device))
    condition = OmegaConf.to_container(cfg.condition) if OmegaConf.is_config(cfg.condition) else cfg.condition
    masks_info, n = None, int(cfg.n)
    if model.mask_conditioned:
        from synth.data.masks import mask_source

        if condition is not None:
            raise SynthError(f"condition={condition}: this {model.name} model draws images for masks, not classes: pass masks=train or masks=<folder|file>")
        condition, masks_info = mask_source(cfg.get("masks"), n, list(model.image_shape[1:]), train_cfg.data, seed=int(cfg.seed))
    elif cfg.get("masks") is not None:
        raise SynthError(f"masks={cfg.masks}: this {model.name} model is not mask-conditioned; drop masks= (train model=controlnet for that)")
    info = write_samples(
        model, out_dir, n=n, batch_size=int(cfg.batch_size), seed=int(cfg.seed), masks_info=masks_info,
        condition=condition, grid=bool(cfg.grid), sampler=cfg.sampler, steps=cfg.steps, guidance=cfg.guidance, eta=cfg.get("eta"),
    )
    log.info(f"{info['n']} samples ({info['seconds_per_sample']:.3f} s/sample on {info['device']}) in {out_dir}")
    return info
