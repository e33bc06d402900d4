"""Hydra callbacks (configured in conf/hydra/*.yaml):

* `RunGuard`: before Hydra makes or writes a run dir, the composed config is checked once (synth.config_check)
  and, for training, the run dir is claimed for this run alone (synth.runs.claim): a refused config leaves
  nothing behind, and two runs never share a dir.
* `CompareOnMultirunEnd`: a multirun whose jobs were evaluated (`evaluate=true`) ends with the comparison table of
  its jobs (compare.py's markdown, CSV and realism-vs-speed plot in <sweep dir>/compare/, and to W&B / TensorBoard
  when those loggers were chosen)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


def _task_config(config: DictConfig) -> DictConfig:
    """The config the task will see (Hydra's own node removed), resolved against this job's Hydra settings."""
    task = config.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _rank() -> int:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


class RunGuard(Callback):
    """Single runs only: a multirun's jobs are checked and claimed by the task itself, so that a refused job is
    recorded as a failed trial instead of ending the sweep. Hydra swallows exceptions raised by callbacks, so a
    refusal here ends the command itself with the one-line error (exit 2)."""

    def __init__(self, task: str = "train") -> None:
        self.task = task

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from synth.cli import die
        from synth.config_check import validate
        from synth.errors import SynthError

        if _rank() != 0:  # a DDP rank re-launched by Lightning: rank 0 checked and claimed already
            return
        HydraConfig.instance().set_config(config)  # so that ${hydra:...} and ${now:...} resolve as the run will see them
        try:
            run_dir = str(config.hydra.run.dir)
            validate(_task_config(config), self.task, key=run_dir)
            if self.task == "train":
                from synth import runs

                runs.claim(run_dir, resume_in_place="submitit" in str(config.hydra.launcher.get("_target_", "")))
        except SynthError as err:
            die(str(err))
        except Exception as err:  # noqa: BLE001  (e.g. an interpolation whose resolver refused: its SynthError inside)
            from synth.cli import user_error

            message = user_error(err)
            if message is None:
                raise
            die(message)


    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """What no job of a multirun could run (each job's own config is checked as it starts)."""
        from synth.cli import die
        from synth.errors import SynthError

        if self.task != "train" or "Slurm" in str(config.hydra.launcher.get("_target_", "")):
            return  # on SLURM every rank is a task SLURM starts: DDP jobs are fine there
        HydraConfig.instance().set_config(config)
        try:
            from synth import scale

            scale.refuse_local_multirun_ddp(_task_config(config))
        except SynthError as err:
            die(str(err))


class CompareOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("evaluate"):
            return
        from synth.evaluation import compare_runs
        from synth.tracking import log_comparison

        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs = sorted(p for p in sweep_dir.iterdir() if (p / "run.json").is_file()) if sweep_dir.is_dir() else []
        if not runs:
            return
        out_dir = sweep_dir / "compare"
        table = compare_runs(runs, out_dir)
        log.info(f"comparison of {len(runs)} runs: {out_dir / 'compare.md'}\n{(out_dir / 'compare.md').read_text()}")
        loggers = [str(k) for k in (config.get("logger") or {})]
        wandb_cfg = (config.get("logger") or {}).get("wandb") or {}
        log_comparison(table, out_dir, loggers, project=str(wandb_cfg.get("project", "synth")),
                       group=str(config.get("experiment_name") or sweep_dir.name))
