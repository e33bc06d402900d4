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
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from synth import _die
from synth.errors import SynthError

log_line = rank_zero_only(lambda msg: print(f"[synth] {msg}", flush=True))


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task from an entry script: user errors become one line on stderr and exit code 2."""
    from hydra.errors import InstantiationException

    try:
        return task(cfg)
    except SynthError as err:
        _die(str(err))
    except InstantiationException as err:  # a constructor refused its config: show the cause, not the wrapper
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SynthError):
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


def load_checkpoint(path: Path) -> dict:
    """Loads tensors and plain data only (weights_only): a checkpoint cannot run code on load."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a checkpoint, pickled code
        raise SynthError(f"cannot read checkpoint {path} ({type(err).__name__}): it is corrupt or not a synth checkpoint; use another (ckpt=best)") from None
    if "synth" not in state or "state_dict" not in state:
        raise SynthError(f"{path} is not a synth checkpoint (no synth metadata): pass a checkpoint written by train.py")
    return state


def resolve_resume(ckpt_path: str | None) -> str | None:
    if ckpt_path in (None, ""):
        return None
    path = Path(str(ckpt_path))
    if path.is_dir():
        return str(find_checkpoint(path, "last"))
    if not path.is_file():
        raise SynthError(f"ckpt_path={ckpt_path} does not exist: pass a .ckpt file or a run dir that holds checkpoints/last.ckpt")
    return str(path)


# ----- train ----------------------------------------------------------------------------------------------
def _instantiate_all(group: DictConfig | None) -> list:
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def _strategy(cfg: DictConfig, model) -> Any:
    """A configured strategy object (strategy=ddp ...) wins over the trainer's strategy name. Strategies a model
    cannot use are refused here, before any process starts."""
    if "_target_" not in cfg.strategy:
        return cfg.trainer.get("strategy", "auto")
    target = str(cfg.strategy._target_)
    choice = HydraConfig.get().runtime.choices.get("strategy", target) if HydraConfig.initialized() else target
    sharded = "DeepSpeed" in target or "FSDP" in target
    if sharded and not model.automatic_optimization:
        raise SynthError(
            f"model={cfg.model.name} steps two optimizers by hand (adversarial training), which strategy={choice} does not "
            "support: use strategy=ddp_find_unused (or trainer=ddp trainer.strategy=ddp_find_unused_parameters_true)"
        )
    if "DeepSpeed" in target:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise SynthError(f"strategy={choice} needs the deepspeed package: pip install deepspeed (on the GPU machine), or use strategy=ddp")
    return instantiate(cfg.strategy)


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


def _refuse_local_multirun_ddp(cfg: DictConfig) -> None:
    """Lightning's DDP re-launches the script per rank; inside a local Hydra multirun that re-runs the sweep."""
    if not HydraConfig.initialized():
        return
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    local = "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", ""))
    devices = cfg.trainer.get("devices", 1)
    spawns = str(cfg.trainer.get("strategy", "auto")).startswith("ddp") or "_target_" in cfg.strategy
    if hydra_cfg.mode == RunMode.MULTIRUN and local and spawns and devices not in (1, "1"):
        raise SynthError(
            "a local multirun (-m) cannot launch multi-process DDP jobs: run each DDP job on its own, "
            "without -m (or sweep through a cluster launcher that starts one process per rank)"
        )


def _pin_hydra_run_dir() -> None:
    """Lightning re-launches DDP ranks with `hydra.run.dir=<HydraConfig run.dir>`; that value is an
    interpolation of `now`, so pin it to the dir this job really has or each rank would get its own."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        with open_dict(hydra_cfg), read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Compose data, model, trainer from `cfg`; fit; return (metrics, objects)."""
    import lightning as L

    _refuse_local_multirun_ddp(cfg)
    _pin_hydra_run_dir()
    run_dir = Path(cfg.paths.output_dir)
    resume = resolve_resume(cfg.get("ckpt_path"))
    _refuse_reuse(run_dir, resume)
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
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy=_strategy(cfg, model))
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
    return metrics, {"model": model, "datamodule": datamodule, "trainer": trainer, "run_dir": run_dir}


# ----- generate -------------------------------------------------------------------------------------------
def load_run(run_dir: Path, ckpt: str = "last"):
    """A trained module from a run dir: its saved config builds the network, its checkpoint fills it."""
    from synth import resolve_run_dir

    run_dir = Path(resolve_run_dir(str(run_dir)))
    train_cfg = OmegaConf.load(run_dir / "config.yaml")
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


def generate(cfg: DictConfig) -> dict:
    """Sample `cfg.n` images from a run into <run>/samples/<time>/ (Hydra's run dir for this job)."""
    from synth.sampling import pick_device, write_samples

    torch.set_grad_enabled(False)
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
