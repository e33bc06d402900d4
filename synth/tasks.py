"""The tasks behind the entry scripts, as plain functions of a composed config (tests call them directly):
`train` (config -> checkpoints, run.json) and `generate` (run dir -> samples)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from synth import _die, scale
from synth.scale import log_line  # noqa: F401  (re-exported: other modules import it from here)
from synth.checkpoint_io import AtomicCheckpointIO
from synth.errors import SynthError
from synth.tracking import default_wandb_offline, finish_wandb



def _in_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task from an entry script: user errors become one line on stderr and exit code 2 (inside a
    multirun the error is raised instead, so one failed job does not end the sweep)."""
    from hydra.errors import InstantiationException

    from synth.config_check import check_targets

    try:
        check_targets(cfg)  # a misspelled key in a YAML file is refused before anything is built
        return task(cfg)
    except SynthError as err:
        if _in_multirun():  # one job of a sweep failed: the sweeper records it and goes on (the job log has the line)
            log_line(f"error: {err}")
            raise
        _die(str(err))
    except InstantiationException as err:  # a constructor refused its config: show the cause, not the wrapper
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SynthError):
            if _in_multirun():
                log_line(f"error: {cause}")
                raise cause from None
            _die(str(cause))
        raise


# ----- checkpoints ----------------------------------------------------------------------------------------
def find_checkpoint(run_dir: Path, which: str = "last") -> Path:
    """`last`, `best`, or a path. Errors name the run and what to do."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if which not in ("last", "best"):
        path = Path(which)
        if not path.is_file():
            raise SynthError(f"ckpt={which} does not exist: pass ckpt=last, ckpt=best or a .ckpt file")
        return path
    if which == "last":
        path = ckpt_dir / "last.ckpt"
    else:
        best = sorted(ckpt_dir.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        path = best[-1] if best else ckpt_dir / "best.ckpt"
    if not path.is_file():
        raise SynthError(f"no {which} checkpoint in {ckpt_dir}: train the run first (or let it reach a validation), or pass ckpt=<file>")
    return path


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """Loads tensors and plain data only (weights_only): a checkpoint cannot run code on load. `mmap` reads
    lazily (a cheap validity check of a large file)."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):  # it would have run code
            raise SynthError(f"checkpoint {path} holds pickled Python objects, which synth never loads (they could run code): use a checkpoint written by train.py") from None
        raise SynthError(f"cannot read checkpoint {path} ({type(err).__name__}): it is corrupt or not a synth checkpoint; use another (ckpt=best)") from None
    if not isinstance(state, dict) or "synth" not in state or "state_dict" not in state:
        raise SynthError(f"{path} is not a synth checkpoint (no synth metadata): pass a checkpoint written by train.py")
    return state


def newest_run_with_checkpoint(outputs: str | Path = "outputs") -> Path:
    """The newest run under <outputs>/train (or train_multirun) that holds checkpoints/last.ckpt (by that file's time)."""
    found = [*Path(outputs).glob("train/*/checkpoints/last.ckpt"), *Path(outputs).glob("train_multirun/*/*/checkpoints/last.ckpt")]
    if not found:
        raise SynthError(f"ckpt_path=last but no run under {outputs}/train holds checkpoints/last.ckpt: pass ckpt_path=<run dir or .ckpt file>, or start without ckpt_path")
    return max(found, key=lambda p: p.stat().st_mtime)


def resolve_resume(ckpt_path: str | None, outputs: str | Path = "outputs") -> str | None:
    """`ckpt_path` -> the checkpoint file to resume from: a .ckpt file, a run dir (its last.ckpt), or `last` (the
    newest run under `outputs` with a last.ckpt). The file is checked to be a readable synth checkpoint."""
    if ckpt_path in (None, ""):
        return None
    path = Path(str(ckpt_path))
    if str(ckpt_path) == "last" and not path.exists():
        path = newest_run_with_checkpoint(outputs)
    elif path.is_dir():
        path = find_checkpoint(path, "last")
    elif not path.is_file():
        raise SynthError(f"ckpt_path={ckpt_path} does not exist: pass a .ckpt file, a run dir that holds checkpoints/last.ckpt, or ckpt_path=last")
    load_checkpoint(path, mmap=True)  # refuse a broken or foreign file now, with its name, rather than mid-setup
    return str(path)


# ----- train ----------------------------------------------------------------------------------------------
def _instantiate_all(group: DictConfig | None) -> list:
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


@rank_zero_only
def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


@rank_zero_only
def _refuse_reuse(run_dir: Path, resume: str | None) -> None:
    """A run dir that holds checkpoints is never reused, unless this run resumes from it."""
    if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        if not (resume and Path(resume).resolve().is_relative_to(run_dir.resolve())):
            raise SynthError(f"{run_dir} already holds a run: it is never overwritten; choose another hydra.run.dir or resume with ckpt_path={run_dir}")


@rank_zero_only
def _save_config(run_dir: Path, cfg: DictConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _save_final(trainer) -> None:
    """A run always ends with checkpoints/last.ckpt at its final step, even when it stopped between validations."""
    cb = trainer.checkpoint_callback
    if cb is None or cb.dirpath is None or getattr(cb, "_last_global_step_saved", -1) == trainer.global_step:
        return
    trainer.save_checkpoint(str(Path(cb.dirpath) / "last.ckpt"))  # collective: every rank calls it


def optimized_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The value a sweeper optimizes: `metrics[cfg.optimized_metric]`; a name the run never logged is an error."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise SynthError(f"optimized_metric={name} was not logged by this run (it has: {', '.join(sorted(metrics)) or 'nothing'}): pick one of those")
    return float(metrics[name])


def train_and_score(cfg: DictConfig) -> float | None:
    """train.py's task: train, then return the metric a sweeper optimizes."""
    metrics, _ = train(cfg)
    return optimized_value(cfg, metrics)


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Compose data, model, trainer from `cfg`; fit; return (metrics, objects)."""
    import lightning as L

    scale.refuse_local_multirun_ddp(cfg)
    scale.pin_hydra_run_dir()
    run_dir = Path(cfg.paths.output_dir)
    resume = scale.requeued_checkpoint(run_dir) or resolve_resume(cfg.get("ckpt_path"), cfg.paths.log_dir)
    _refuse_reuse(run_dir, resume)
    if resume and Path(resume).resolve().is_relative_to(run_dir.resolve()):
        scale.keep_csv_log(run_dir)
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
    _write_json(run_dir / "data_meta.json", meta)

    callbacks = _instantiate_all(cfg.get("callbacks"))
    default_wandb_offline()
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy=scale.strategy(cfg, model),
                          plugins=[AtomicCheckpointIO(), *scale.cluster_plugins()])
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log_line(f"run dir: {run_dir}  |  {cfg.model.name} ({model.family}, {model.n_parameters:,} parameters) on {meta['name']} {meta['image_size']}x{meta['channels']}ch, {meta['n_train']} train items")

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    train_seconds = time.perf_counter() - start
    _save_final(trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.get("test_after"):
        ckpt = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
        for result in trainer.test(model, datamodule=datamodule, ckpt_path=ckpt):
            metrics.update(result)
    ckpt_cb = trainer.checkpoint_callback
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
        "best_checkpoint": ckpt_cb.best_model_path if ckpt_cb else None,
        "metrics": metrics,
    }
    _write_json(run_dir / "run.json", info)
    if cfg.get("sample_after", 0) and trainer.is_global_zero:
        from synth.sampling import write_samples

        write_samples(model, run_dir / "samples" / "after_training", n=int(cfg.sample_after), seed=cfg.seed)
    log_line(f"done: {trainer.global_step} steps in {train_seconds:.0f}s; checkpoints in {run_dir / 'checkpoints'}")
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
    from synth.tracking import log_evaluation

    out_dir = run_dir / "eval" / "after_training"
    result = evaluate_run(run_dir, n=cfg.get("evaluate_n"), out_dir=out_dir, seed=int(cfg.seed))
    log_evaluation(trainer.loggers, result, trainer.global_step, out_dir)
    log_line(f"evaluation: {out_dir / 'report.md'}")
    return flat_metrics(result)


# ----- generate -------------------------------------------------------------------------------------------
def load_run_config(run_dir: Path) -> DictConfig:
    """A run's saved config.yaml, read as plain YAML data (OmegaConf's safe loader: no Python tags, no code)."""
    path = Path(run_dir) / "config.yaml"
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SynthError(f"cannot read {path} ({first}): it is not a config written by train.py; retrain or restore that file") from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "_target_" not in cfg.model:
        raise SynthError(f"{path} has no model section: it is not a config written by train.py; pass a run dir made by train.py")
    return cfg


def load_run(run_dir: Path, ckpt: str = "last"):
    """A trained module from a run dir: its saved config builds the network, its checkpoint fills it."""
    from synth import resolve_run_dir

    run_dir = Path(resolve_run_dir(str(run_dir)))
    train_cfg = load_run_config(run_dir)
    state = load_checkpoint(find_checkpoint(run_dir, ckpt))
    info = state["synth"]
    if info.get("family") != train_cfg.model.family or info.get("model", train_cfg.model.name) != train_cfg.model.name:
        raise SynthError(
            f"the checkpoint holds a {info.get('model')} ({info.get('family')}) model but {run_dir} is a {train_cfg.model.name} run: "
            "pass the checkpoint that belongs to this run"
        )
    model = instantiate(train_cfg.model)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise SynthError(f"the checkpoint does not fit the network of {run_dir / 'config.yaml'} ({str(err).splitlines()[0]}): use the run's own checkpoint") from None
    model.data_meta = info.get("data_meta", {})
    return model, train_cfg


@torch.no_grad()  # scoped: a global switch would leak into whatever runs next in this process
def generate(cfg: DictConfig) -> dict:
    """Sample `cfg.n` images from a run into <run>/samples/<time>/ (Hydra's run dir for this job)."""
    from synth.sampling import pick_device, write_samples

    model, _ = load_run(cfg.run_dir, cfg.ckpt)
    model.to(pick_device(cfg.device))
    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    condition = OmegaConf.to_container(cfg.condition) if OmegaConf.is_config(cfg.condition) else cfg.condition
    info = write_samples(
        model, out_dir, n=int(cfg.n), batch_size=int(cfg.batch_size), seed=int(cfg.seed),
        condition=condition, grid=bool(cfg.grid), sampler=cfg.sampler, steps=cfg.steps, guidance=cfg.guidance,
    )
    log_line(f"{info['n']} samples ({info['seconds_per_sample']:.3f} s/sample on {info['device']}) in {out_dir}")
    return info
