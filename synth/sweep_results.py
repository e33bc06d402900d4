"""What a sweep leaves in its sweep dir, rewritten by every worker when it ends (atomic writes: two workers ending
together never leave a half file):

* `trials.csv`: every trial (number, state, value(s), parameters, run dir, error);
* one objective: `best.yaml` (trial, value, parameters, run dir) and `best_config.yaml` (that run's complete
  config, ready for `python train.py --config-path <sweep dir> --config-name best_config`);
* several objectives: `pareto.csv` and `pareto.png` (the trials no other trial beats on every objective, and
  where they lie among the rest), and `best.yaml` listing that front.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from synth.io import atomic_write

log = logging.getLogger(__name__)


def _run_dir(trial: FrozenTrial, sweep_dir: Path) -> Path | None:
    recorded = trial.user_attrs.get("run_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    found = sorted(sweep_dir.glob(f"{trial.number}_*"))
    return found[0] if found else None


def _entry(trial: FrozenTrial, sweep_dir: Path, names: list[str]) -> dict:
    run_dir = _run_dir(trial, sweep_dir)
    values = dict(zip(names, trial.values)) if len(names) > 1 else {"value": trial.value}
    return {"trial": trial.number, **values, "params": dict(trial.params), "run_dir": str(run_dir) if run_dir else None}


def write(study: optuna.Study, sweep_dir: str | Path, objectives: list[str]) -> None:
    sweep_dir = Path(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    columns = ("number", "values" if len(objectives) > 1 else "value", "state", "params", "user_attrs", "datetime_start", "duration")
    frame = study.trials_dataframe(attrs=columns, multi_index=False)
    if len(objectives) > 1 and not frame.empty:
        frame = frame.rename(columns={f"values_{i}": name for i, name in enumerate(objectives)})
    atomic_write(sweep_dir / "trials.csv", lambda tmp: frame.to_csv(tmp, index=False))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        log.error(f"no trial finished: see the job logs in {sweep_dir}/<trial>/train.log")
        return
    if len(objectives) > 1:
        _write_front(study, sweep_dir, objectives, done)
        return
    best = study.best_trial
    info = {"study": study.study_name, "objective": objectives[0], **_entry(best, sweep_dir, objectives)}
    atomic_write(sweep_dir / "best.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(info), tmp))
    run_dir = Path(info["run_dir"]) if info["run_dir"] else None
    if run_dir and (run_dir / "config.yaml").is_file():
        atomic_write(sweep_dir / "best_config.yaml", lambda tmp: shutil.copyfile(run_dir / "config.yaml", tmp))
    log.info(f"best trial {best.number}: {objectives[0]}={best.value:.5g} with {best.params} -> {sweep_dir / 'best_config.yaml'}")


def _write_front(study: optuna.Study, sweep_dir: Path, objectives: list[str], done: list[FrozenTrial]) -> None:
    import pandas as pd

    front = sorted(study.best_trials, key=lambda t: t.values[0])
    rows = [{"trial": t.number, **dict(zip(objectives, t.values)), **{f"params_{k}": v for k, v in t.params.items()},
             "run_dir": str(_run_dir(t, sweep_dir) or "")} for t in front]
    atomic_write(sweep_dir / "pareto.csv", lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    info = {"study": study.study_name, "objectives": list(objectives),
            "directions": [d.name.lower() for d in study.directions],
            "pareto_front": [_entry(t, sweep_dir, objectives) for t in front]}
    atomic_write(sweep_dir / "best.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(info), tmp))
    atomic_write(sweep_dir / "pareto.png", lambda tmp: _plot_front(done, front, objectives, study, tmp))
    log.info(f"Pareto front of {len(front)} trial(s) ({', '.join(objectives)}): trials {[t.number for t in front]} -> "
             f"{sweep_dir / 'pareto.csv'}, {sweep_dir / 'pareto.png'}")


def _plot_front(done: list[FrozenTrial], front: list[FrozenTrial], objectives: list[str], study: optuna.Study, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = objectives[-1], objectives[0]  # cost across, realism up: the trade-off every comparison plot shows
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    others = [t for t in done if t not in front]
    ax.scatter([t.values[-1] for t in others], [t.values[0] for t in others], color="tab:gray", s=22, label="other trials")
    fx, fy = [t.values[-1] for t in front], [t.values[0] for t in front]
    order = sorted(range(len(front)), key=lambda i: fx[i])
    ax.plot([fx[i] for i in order], [fy[i] for i in order], "-o", color="tab:red", ms=5, label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[-1], t.values[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{x} ({study.directions[-1].name.lower()})")
    ax.set_ylabel(f"{y} ({study.directions[0].name.lower()})")
    ax.set_title(f"{study.study_name}: {len(done)} trials, {len(front)} on the front", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
