"""synth's Hydra sweeper on Optuna >= 4 (`hydra/sweeper=synth_optuna`, chosen by the `sweep=` configs in sweeps/).

A sweep is one Optuna study and any number of **workers**. A worker repeats: take the next trial from the study
(`_next_trial`, with synth.sweep_study: under a lock in the sweep dir, counting what is finished and running, with a
sampler seed derived from the study's state), launch it as one Hydra job through the configured launcher (its
run dir is `<sweep dir>/<trial number>_<model>_<data>`), and tell the study how it ended: COMPLETE with the job's
`optimized_metric` value(s), PRUNED when the job's pruner stopped it (synth.trial_report), FAIL otherwise. A
worker stops when the study holds `n_trials` finished or running trials, or when more than `max_failure_rate` x
`n_trials` trials have failed since it started.

* One command runs `hydra.sweeper.n_jobs` workers as threads when the launcher runs jobs in other processes
  (submitit_local, slurm: n_jobs trials always in flight, the next one asked as soon as one ends); with Hydra's
  basic launcher jobs run in this process, one at a time.
* More commands on the same storage and sweep dir (another terminal, another machine, the tasks of a SLURM array)
  are more workers of the same study. `storage=journal` (or an RDB URL) is the one for many machines.
* Rerunning a command resumes: finished trials are kept and never redone, trials left running by a dead worker
  are recorded as failed (interrupted), and the sampler continues from the study (no repeated suggestions).
* Every worker ends by writing the results (synth.sweep_results): trials.csv, best.yaml, best_config.yaml, or
  pareto.csv / pareto.png when `optimized_metric` names several metrics (one `direction` each).
"""
from __future__ import annotations

import inspect
import logging
import math
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from synth import sweep_results, sweep_space, sweep_study
from synth.errors import SynthError

log = logging.getLogger(__name__)


class SweepStopped(SynthError):
    """Too many trials failed: the command ends with one line (the trials stay recorded; rerun to go on)."""


def _directions(direction: Any, n: int) -> list[str]:
    """One direction per optimized metric (a single word for a single metric)."""
    listed = isinstance(direction, (list, tuple, ListConfig))
    dirs = [str(d) for d in direction] if listed else [str(direction)]
    if len(dirs) != n or any(d not in ("minimize", "maximize") for d in dirs):
        shown = f"[{','.join(dirs)}]" if listed else dirs[0]
        raise SynthError(f"hydra.sweeper.direction={shown} does not fit optimized_metric ({n} metric(s)): give one direction "
                         f"(minimize or maximize) per metric, e.g. hydra.sweeper.direction=[{','.join(['minimize'] * max(n, 1))}]")
    return dirs


def _quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class SynthSweeper:
    def __init__(self, sampler: DictConfig, pruner: DictConfig | None, direction: Any, study_name: str, storage: str,
                 n_trials: int, n_jobs: int = 1, max_failure_rate: float = 0.25, seed: int | None = None,
                 params: DictConfig | None = None, heartbeat_s: float = 60, stale_after_s: float = 600) -> None:
        if not 0 <= float(max_failure_rate) <= 1:
            raise SynthError(f"hydra.sweeper.max_failure_rate={max_failure_rate} must lie in [0, 1]: e.g. 0.25")
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise SynthError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both must be at least 1")
        self.sampler_cfg, self.pruner_cfg, self.direction = sampler, pruner, direction
        self.study_name, self.storage_spec, self.params = str(study_name), str(storage), params
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), int(n_jobs), float(max_failure_rate)
        self.seed = None if seed is None else int(seed)
        self.heartbeat_s, self.stale_after_s = float(heartbeat_s), float(stale_after_s)
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._local = threading.local()  # per worker thread: its storage connection

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ----- the study ------------------------------------------------------------------------------------------
    def _objectives(self) -> list[str]:
        metric = self.config.get("optimized_metric")
        names = [str(m) for m in metric] if isinstance(metric, ListConfig) else ([str(metric)] if metric else [])
        if not names:
            raise SynthError("a sweep needs optimized_metric (the metric each trial returns): e.g. optimized_metric=val/loss, "
                             "or a list such as [eval/frd,eval/seconds_per_sample] for a Pareto front")
        return names

    def _sampler(self, seed: int | None) -> optuna.samplers.BaseSampler:
        """The configured sampler; its seed is the one given (a sampler config that names its own seed keeps it:
        QMC's place in its sequence is stored in the study under that seed)."""
        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
        params = inspect.signature(get_class(cfg["_target_"])).parameters
        if "search_space" in params:  # the grid sampler walks the search space itself
            cfg["search_space"] = self.grid
        if "seed" in params and cfg.get("seed") is None:
            cfg["seed"] = seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # GP, QMC: stable enough for us
            return instantiate(cfg)

    def _open_study(self, create: bool = False) -> optuna.Study:
        storage = self._storage()
        pruner = instantiate(self.pruner_cfg) if self.pruner_cfg else None
        if create:
            try:  # the storage's record of the study, without building a Study for it
                existing = [d.name.lower() for d in storage.get_study_directions(storage.get_study_id_from_name(self.study_name))]
            except KeyError:
                existing = None
            if existing is not None and existing != self.directions:
                raise SynthError(f"study {self.study_name} in {self.address} was created with directions "
                                 f"{existing}, not {self.directions}: start a new study with "
                                 f"sweep_name=<new name>, or keep optimized_metric and hydra.sweeper.direction as they were")
            return optuna.create_study(study_name=self.study_name, storage=storage, directions=self.directions,
                                       sampler=self._sampler(self.seed), pruner=pruner, load_if_exists=True)
        return optuna.load_study(study_name=self.study_name, storage=storage, sampler=self._sampler(self.seed), pruner=pruner)

    def _storage(self) -> optuna.storages.BaseStorage:
        """One storage object per worker thread (the study and synth's trial records use the same)."""
        if getattr(self._local, "storage", None) is None:
            self._local.storage = sweep_study.open_storage(self.address)
        return self._local.storage

    def _trial_id(self, trial: optuna.trial.Trial) -> int:
        return sweep_study.trial_id(self._storage(), self.study_name, trial.number)

    def _next_trial(self, study: optuna.Study) -> optuna.trial.Trial | None:
        """Under the ask lock: fail stale trials, decide whether a trial is left to run, ask it (or None: stop)."""
        with self._lock, sweep_study.ask_lock(self.sweep_dir):
            if self.stop_reason:
                return None
            sweep_study.fail_stale(study, self._storage(), self.stale_after_s)
            trials = study.get_trials(deepcopy=False)
            n = sweep_study.counts(trials, self.baseline_failures)
            if n["failed"] > self.max_failures:
                self.stop_reason = (f"{n['failed']} trials failed, more than max_failure_rate allows "
                                    f"({self.max_failures} of n_trials={self.n_trials}); last: {self._last_error(trials)}")
                return None
            if n["finished"] + n["running"] >= self.n_trials:
                return None
            if self.grid is not None:
                started = {t.system_attrs.get("grid_id") for t in trials if t.state != TrialState.WAITING}
                if len(started & set(range(self.grid_points))) >= self.grid_points:
                    return None
            study.sampler = self._sampler(sweep_study.derive_seed(self.seed, len(trials)))
            trial = study.ask(self.distributions)
            sweep_study.mark_running(self._storage(), self._trial_id(trial))
            return trial

    @staticmethod
    def _last_error(trials: list) -> str:
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error")]
        return f"trial {failed[-1].number}, {failed[-1].user_attrs['error']}" if failed else "see the job logs"

    # ----- one trial --------------------------------------------------------------------------------------------
    def _overrides(self, trial: optuna.trial.Trial) -> list[str]:
        params = [f"{k}={v}" for k, v in trial.params.items()]
        fixed = [f"{k}={v}" for k, v in self.fixed.items()]
        where = f"{{number:{trial.number},study:{_quote(self.study_name)},storage:{_quote(self.address)}}}"
        return [*fixed, *params, f"sweep_trial={where}"]

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn) -> None:
        storage, trial_id = self._storage(), self._trial_id(trial)
        run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
        if run_dir:
            storage.set_trial_user_attr(trial_id, "run_dir", str(Path(run_dir).resolve()))
        frozen = storage.get_trial(trial_id)
        state, values, error = TrialState.COMPLETE, None, None
        try:
            raw = ret.return_value  # Hydra re-raises a failed job's exception here
        except Exception as err:  # noqa: BLE001  (any failure of the job is the trial's failure)
            raw, state, error = None, TrialState.FAIL, " ".join(f"{type(err).__name__}: {err}".split())[:300]
        if state != TrialState.FAIL and frozen.user_attrs.get(sweep_study.PRUNED_AT) is not None:
            state = TrialState.PRUNED
        elif state != TrialState.FAIL:
            values = list(raw) if isinstance(raw, (list, tuple, ListConfig)) else [raw]
            if len(values) != len(self.directions) or any(v is None or not math.isfinite(float(v)) for v in values):
                state, values = TrialState.FAIL, None
                error = f"the job returned {raw}: set optimized_metric to finite metric(s) the run logs, one per direction"
            else:
                values = [float(v) for v in values]
        if error:
            storage.set_trial_user_attr(trial_id, "error", error)
        sweep_study.tell(study, trial, state=state, values=values)
        what = {TrialState.COMPLETE: f"finished: {values}", TrialState.PRUNED: f"pruned at step {frozen.user_attrs.get(sweep_study.PRUNED_AT)}",
                TrialState.FAIL: f"failed ({error})"}[state]
        (log.warning if state == TrialState.FAIL else log.info)(f"trial {trial.number} {what}")

    def _run_trial(self, study: optuna.Study, trial: optuna.trial.Trial) -> None:
        overrides = self._overrides(trial)
        log.info(f"trial {trial.number}: {' '.join(f'{k}={v}' for k, v in trial.params.items())}")
        try:
            with sweep_study.heartbeat(self._storage(), self._trial_id(trial), self.heartbeat_s):
                ret = self.launcher.launch([overrides], initial_job_idx=trial.number)[0]
        except BaseException:  # Ctrl-C, an interrupted job (exit 130): recorded, and the next run of the sweep goes on
            self._storage().set_trial_user_attr(self._trial_id(trial), sweep_study.INTERRUPTED, True)
            sweep_study.tell(study, trial, state=TrialState.FAIL)
            raise
        self._tell(study, trial, ret)

    def _worker(self) -> None:
        study = self._open_study()
        while (trial := self._next_trial(study)) is not None:
            self._run_trial(study, trial)

    # ----- the sweep --------------------------------------------------------------------------------------------
    def _prepare(self, arguments: list[str]) -> None:
        objectives = self._objectives()
        self.objectives, self.directions = objectives, _directions(self.direction, len(objectives))
        self.distributions, self.fixed = sweep_space.parse_space(sweep_space.space_lines(self.params, arguments), self.config)
        self.grid, self.grid_points = None, 0
        if "search_space" in inspect.signature(get_class(str(self.sampler_cfg._target_))).parameters:
            self.grid = sweep_space.grid_space(self.distributions)
            self.grid_points = sweep_space.grid_size(self.grid)
            if self.grid_points < self.n_trials:
                log.info(f"the grid has {self.grid_points} points: n_trials {self.n_trials} -> {self.grid_points}")
                self.n_trials = self.grid_points
        self.max_failures = int(self.max_failure_rate * self.n_trials)
        pruning = self.pruner_cfg is not None and "NopPruner" not in str(self.pruner_cfg.get("_target_"))
        if pruning and (len(objectives) > 1 or not objectives[0].startswith("val/")):
            log.warning(f"no pruning in this sweep: the pruner needs one metric reported at every validation, and "
                        f"optimized_metric={objectives if len(objectives) > 1 else objectives[0]} is not a val/ metric")
        self.address = sweep_study.address(self.storage_spec, self.sweep_dir)

    def sweep(self, arguments: list[str]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._prepare(arguments)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with sweep_study.ask_lock(self.sweep_dir):
            study = self._open_study(create=True)
        trials = study.get_trials(deepcopy=False)
        self.baseline_failures = {t.number for t in trials if t.state == TrialState.FAIL}
        n = sweep_study.counts(trials)
        in_process = type(self.launcher).__name__ == "BasicLauncher"
        workers = 1 if in_process else self.n_jobs
        log.info(f"study {self.study_name}: {n['finished']} of {self.n_trials} trials finished, {n['running']} running elsewhere; "
                 f"{', '.join(self.objectives)} ({', '.join(self.directions)}); sampler {type(study.sampler).__name__}, "
                 f"pruner {type(study.pruner).__name__}; {workers} worker(s) here")
        log.info(f"storage: {self.address}  (watch it: optuna-dashboard {self.address})")
        if in_process and self.n_jobs > 1:
            log.info(f"hydra.sweeper.n_jobs={self.n_jobs}: the basic launcher runs one job at a time in this process; for parallel "
                     "trials use hydra/launcher=submitit_local|slurm, or start more workers on the same storage")
        try:
            if workers == 1:
                self._worker()
            else:
                self._run_threads(workers)
        finally:
            sweep_results.write(study, self.sweep_dir, self.objectives)  # reads the storage afresh
        if self.stop_reason:
            raise SweepStopped(f"sweep stopped: {self.stop_reason}: see the job logs ({self.sweep_dir}/<trial>_*/train.log), fix the "
                               "cause and rerun the same command (finished trials are kept)")

    def _run_threads(self, workers: int) -> None:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._worker()
            except BaseException as err:  # noqa: BLE001  (re-raised in the main thread below)
                errors.append(err)
                self.stop_reason = self.stop_reason or f"a worker stopped: {type(err).__name__}: {err}"

        threads = [threading.Thread(target=work, name=f"synth-sweep-worker-{i}", daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=1.0)
        if errors:
            raise errors[0]
