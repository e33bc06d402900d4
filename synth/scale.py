"""How a run is spread over processes and machines: the configured strategy (refusing those a model cannot
use), DDP re-launch safety, SLURM / submitit integration (one owner for preemption: submitit requeues, the
requeued job resumes in place) and what a resumed run keeps."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict, read_write

from synth.errors import SynthError

log = logging.getLogger(__name__)


def strategy(cfg: DictConfig, model) -> Any:
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
            "support: use strategy=ddp_find_unused"
        )
    if "DeepSpeed" in target:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise SynthError(f"strategy={choice} needs the deepspeed package: pip install deepspeed (on the GPU machine), or use strategy=ddp")
    return instantiate(cfg.strategy)



def refuse_local_multirun_ddp(cfg: DictConfig) -> None:
    """Lightning's DDP re-launches the script per rank; inside a multirun that is not on SLURM (the basic or the
    submitit_local launcher) that would re-run the sweep. On SLURM each rank is a task that SLURM started."""
    if not HydraConfig.initialized():
        return
    from hydra.types import RunMode
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    devices = cfg.trainer.get("devices", 1)
    spawns = str(cfg.trainer.get("strategy", "auto")).startswith("ddp") or "_target_" in cfg.strategy
    if HydraConfig.get().mode == RunMode.MULTIRUN and spawns and devices not in (1, "1") and not SLURMEnvironment.detect():
        raise SynthError(
            "a local multirun (-m) cannot launch multi-process DDP jobs: run each DDP job on its own, without -m, "
            "or sweep on SLURM (hydra/launcher=slurm starts one task per GPU)"
        )


def pin_hydra_run_dir() -> None:
    """Lightning re-launches DDP ranks with `hydra.run.dir=<HydraConfig run.dir>`; that value is an
    interpolation of `now`, so pin it to the dir this job really has or each rank would get its own."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        with open_dict(hydra_cfg), read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def requeued_checkpoint(run_dir: Path) -> str | None:
    """Preemption has one owner, submitit: on SLURM's warning signal it requeues the job with the same pickled
    config, hence the same run dir. A job under a submitit launcher (slurm, submitit_local) whose run dir already
    holds checkpoints/last.ckpt is such a requeued (or re-submitted) job and resumes from it, without user action."""
    if not HydraConfig.initialized() or "submitit" not in str(HydraConfig.get().launcher.get("_target_", "")):
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        rank_zero_only(log.info)(f"requeued job: resuming from {last}")
        return str(last)
    return None


@rank_zero_only
def keep_csv_log(run_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; a run resumed in its own dir keeps it as metrics.<k>.csv."""
    log = run_dir / "csv" / "metrics.csv"
    if log.is_file():
        k = 1 + len(list(log.parent.glob("metrics.*.csv")))
        log.rename(log.with_name(f"metrics.{k}.csv"))


def cluster_plugins() -> list:
    """Under SLURM, Lightning reads ranks from SLURM's variables but must not requeue jobs itself (submitit does)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
