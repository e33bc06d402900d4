"""Optuna sweeps that survive interruption: the Hydra Optuna sweeper (hydra-optuna-sweeper 1.3) with three
changes, selected by `hydra/sweeper=synth_optuna` (the `sweep=` configs in sweeps/ do):

- **resume**: the study lives in a sqlite file in a fixed sweep dir, so rerunning the same command loads it,
  marks trials left running by a killed sweep as failed, and runs only the trials still missing
  (`n_trials` counts finished trials, not launches); job dirs continue the trial numbering, nothing is redone
  or overwritten;
- **failures do not end the study**: a failed trial (an exception, out of memory, a NaN metric) is recorded as
  FAIL and the sweep goes on, until more than `max_failure_rate` x `n_trials` trials have failed (the stock
  sweeper judges each batch of `n_jobs` alone: with one job per batch, one failure ended the study);
- **results**: at the end, `best_config.yaml` (the best trial's resolved run config, ready for
  `python train.py --config-path ... ` or to copy into conf/experiment), `best.yaml` and `trials.csv` in the
  sweep dir.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class _StopSweep(Exception):
    pass


class _TolerantLauncher:
    """Wraps the real launcher to count failed jobs over the whole sweep (the stock sweeper judges each batch
    alone, so with one job per batch a single failure ended the study). A failed job stays failed: the sweeper
    records it as FAIL and goes on; once failures exceed the budget, the next launch stops the sweep."""

    def __init__(self, launcher: Any, max_failures: int) -> None:
        self.launcher, self.max_failures, self.failures = launcher, max_failures, 0
        self.stop_reason: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.stop_reason:
            raise _StopSweep(self.stop_reason)
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for num, ret in enumerate(returns, start=initial_job_idx):
            if ret.status == JobStatus.FAILED:
                error: Any = f"{type(ret._return_value).__name__}: {ret._return_value}"
            elif ret.return_value is None or (isinstance(ret.return_value, float) and not math.isfinite(ret.return_value)):
                error = f"the job returned {ret.return_value}: set optimized_metric to a finite metric the run logs"
            else:
                continue
            self.failures += 1
            log.warning(f"trial {num} failed ({error}); {self.failures} failure(s), at most {self.max_failures} allowed")
            if self.failures > self.max_failures:
                self.stop_reason = (f"{self.failures} trials failed, more than max_failure_rate allows ({self.max_failures}); "
                                    f"last: trial {num}, {error}")
        return returns


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, **params: Any) -> None:
        params.pop("defaults", None)
        super().__init__(**params)
        self.planned_trials = int(self.n_trials)
        self.planned_failure_rate = float(self.max_failure_rate)
        self.max_failure_rate = 1.0  # the stock per-batch check; _TolerantLauncher counts over the sweep

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = _TolerantLauncher(self.launcher, int(self.planned_failure_rate * self.planned_trials))

    def _existing_study(self) -> optuna.Study | None:
        if not self.storage or self.study_name is None:
            return None
        try:
            return optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # no such study yet
            return None

    def sweep(self, arguments: list[str]) -> None:
        Path(str(self.sweep_dir)).mkdir(parents=True, exist_ok=True)  # the sqlite file lives there
        study = self._existing_study()
        done = 0
        if study is not None:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # left running by a killed sweep
                log.warning(f"trial {trial.number} was interrupted by a previous run of this sweep: recorded as failed")
            done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            self.job_idx = len(study.trials)  # job dirs continue the trial numbering
            log.info(f"resuming study {self.study_name}: {done} of {self.planned_trials} trials finished, "
                     f"{max(0, self.planned_trials - done)} to go")
        self.n_trials = max(0, self.planned_trials - done)
        if self.n_trials == 0 and done:
            log.info("all trials already finished; writing the results again")
        try:
            super().sweep(arguments)
        except _StopSweep:
            pass
        except RuntimeError as err:  # GridSampler calls Study.stop when its grid is used up; the stock sweeper lets that
            if "Study.stop" not in str(err):  # escape when the last grid point failed
                raise
        except ValueError as err:  # the stock sweeper asks for the best trial even when none finished
            if "Record does not exist" not in str(err):
                raise
        self._write_results()
        if self.launcher.stop_reason:
            raise RuntimeError(f"sweep stopped: {self.launcher.stop_reason}. Job logs: {self.sweep_dir}/<trial>/train.log")

    def _write_results(self) -> None:
        study = optuna.load_study(study_name=self.study_name, storage=self.storage) if self.storage else None
        if study is None:
            return
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)  # asked, then never run: the sweep stopped
        sweep_dir = Path(str(self.sweep_dir))
        study.trials_dataframe().to_csv(sweep_dir / "trials.csv", index=False)
        try:
            best = study.best_trial
        except ValueError:  # no completed trial
            log.error(f"no trial finished: see the job logs in {sweep_dir}")
            return
        run_dirs = sorted(sweep_dir.glob(f"{best.number}_*")) + sorted(sweep_dir.glob(f"{best.number}"))
        info = {"study": self.study_name, "trial": best.number, "value": best.value, "params": best.params,
                "run_dir": str(run_dirs[0]) if run_dirs else None}
        OmegaConf.save(OmegaConf.create(info), sweep_dir / "best.yaml")
        if run_dirs and (run_dirs[0] / "config.yaml").is_file():
            shutil.copyfile(run_dirs[0] / "config.yaml", sweep_dir / "best_config.yaml")
        log.info(f"best trial {best.number}: {best.value:.5g} with {best.params} -> {sweep_dir / 'best_config.yaml'}")
