"""Optuna sweeps (synth/sweeper.py, sweep_study.py, sweep_space.py, sweep_results.py, trial_report.py, issue #16).

Fast tests drive the sweeper's own study machinery (search space, samplers from config, seeds, resume, stale
trials, storages, the dashboard) with an analytic objective in place of training. The slow ones run real sweeps of
tiny models through train.py: a killed sweep resumes without repeating a trial, failures up to max_failure_rate,
a hopeless trial pruned, two worker processes on one journal study, a Pareto sweep, the shipped search spaces, and
a submitit sweep whose preempted trial resumes from its checkpoint."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from synth import sweep_space, sweep_study
from synth.errors import SynthError
from synth.tasks import optimized_value
from tests.conftest import CONF, ROOT, TINY, phantom, run_script

TINY_DDPM = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=12), "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false", "callbacks.sample_grid.n=0"]
QUICK = ["debug=default", "trainer.max_epochs=-1", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=null"]
SWEEP = [*TINY_DDPM, "sweep=ddpm", *QUICK, "trainer.max_steps=3", "trainer.val_check_interval=3", "hydra.sweeper.n_trials=3"]


# ----- helpers ----------------------------------------------------------------------------------------------
def make_sweeper(sweep_dir: Path, overrides: list[str] = (), arguments: list[str] = ()):
    """The sweeper exactly as Hydra builds it from conf/ (sweep=ddpm on phantom), its study in `sweep_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=ddpm", "data=phantom", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    sweeper = instantiate(cfg.hydra.sweeper).sweeper
    sweeper.config, sweeper.sweep_dir = cfg, Path(sweep_dir)
    sweeper._prepare(list(arguments))
    with sweep_study.ask_lock(sweep_dir):
        study = sweeper._open_study(create=True)
    sweeper.baseline_failures = {t.number for t in study.trials if t.state == TrialState.FAIL}
    return sweeper, study


def bowl(params: dict) -> float:
    """An analytic objective over the ddpm space: best near lr=5e-4, 2 res blocks, batch 16."""
    import math

    return (math.log10(params["model.optimizer.lr"]) + 3.3) ** 2 + (params["model.net.num_res_blocks"] == 1) * 0.3 + \
        (params["data.batch_size"] == 8) * 0.1 + abs(params["model.ema_decay"] - 0.995) * 10


def ask_and_tell(sweeper, study, n: int) -> list:
    out = []
    for _ in range(n):
        trial = sweeper._next_trial(study)
        if trial is None:
            break
        sweep_study.tell(study, trial, values=[bowl(trial.params)])
        out.append(trial)
    return out


def param_sets(trials) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}


def _study(sweep_dir: Path, name: str = "ddpm_phantom", storage: str = "sqlite") -> list:
    addr = sweep_study.address(storage, sweep_dir)
    try:
        return optuna.load_study(study_name=name, storage=sweep_study.open_storage(addr)).get_trials(deepcopy=False)
    except KeyError:  # the file exists before the study is recorded in it
        return []


def _states(trials) -> list[str]:
    return sorted(t.state.name for t in trials)


# ----- search spaces ----------------------------------------------------------------------------------------
def test_search_space_grammar_becomes_optuna_distributions():
    dists, fixed = sweep_space.parse_space([
        "a=choice(1, 2)", "b=range(1, 7, 2)", "c=interval(0.1, 0.5)", "d=tag(log, interval(1e-4, 1e-2))",
        "e=tag(int, interval(2, 9))", "f=tag(int, log, interval(1, 64))", "g=choice([8,16],[16,32])", "h=range(0.1, 0.4, 0.1)",
        "i=3",
    ])
    assert dists["a"] == CategoricalDistribution([1, 2])
    assert dists["b"] == IntDistribution(1, 5, step=2)  # Hydra's range excludes its stop
    assert dists["c"] == FloatDistribution(0.1, 0.5)
    assert dists["d"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["e"] == IntDistribution(2, 9) and dists["f"] == IntDistribution(1, 64, log=True)
    assert dists["g"] == CategoricalDistribution(["[8,16]", "[16,32]"])  # lists travel as override text
    assert dists["h"].step == pytest.approx(0.1) and dists["h"].low == pytest.approx(0.1) and dists["h"].high == pytest.approx(0.3)
    assert fixed == {"i": "3"}
    assert sweep_space.grid_space({k: dists[k] for k in "abeg"})["b"] == [1, 3, 5]
    with pytest.raises(SynthError, match="c is a continuous range"):
        sweep_space.grid_space(dists)
    # the command line wins over the config's space, key by key
    assert sweep_space.space_lines({"a": "choice(1, 2)", "b": "range(1, 3)"}, ["a=5", "x=1"]) == ["a=5", "b=range(1, 3)", "x=1"]


def test_sweep_configs_compose_with_their_search_space(tmp_path):
    for name, metric in [("ddpm", "optimized_metric: val/loss"), ("vae", "optimized_metric: val/"), ("dcgan", "optimized_metric: val/"),
                         ("ddpm_pareto", "optimized_metric:\n- eval/frd\n- eval/seconds_per_sample")]:
        res = run_script("train.py", ["--cfg", "all", f"sweep={name}", "data=phantom"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        out = res.stdout
        assert metric in out and "SynthOptunaSweeper" in out and "TPESampler" in out, out[-3000:]
        assert "model.optimizer.lr: tag(log, interval(" in out


def test_optimized_metric_must_be_logged():
    cfg = OmegaConf.create({"optimized_metric": "val/fid"})
    with pytest.raises(SynthError, match="optimized_metric=val/fid was not logged.*val/loss"):
        optimized_value(cfg, {"val/loss": 0.3})
    assert optimized_value(OmegaConf.create({"optimized_metric": "val/loss"}), {"val/loss": 0.25}) == 0.25
    assert optimized_value(OmegaConf.create({"optimized_metric": None}), {}) is None
    both = OmegaConf.create({"optimized_metric": ["eval/frd", "eval/seconds_per_sample"]})
    assert optimized_value(both, {"eval/frd": 3.5, "eval/seconds_per_sample": 0.02, "val/loss": 1.0}) == [3.5, 0.02]


# ----- samplers, seeds, resume ------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "qmc", "nsgaii"])
def test_sampler_from_config_continues_on_resume_and_honours_the_seed(tmp_path, sampler):
    startup = {"tpe": ["hydra.sweeper.sampler.n_startup_trials=2"], "gp": ["hydra.sweeper.sampler.n_startup_trials=2"]}.get(sampler, [])
    over = [f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.n_trials=6", "seed=3", *startup]
    sweeper, study = make_sweeper(tmp_path / "a", over)
    assert type(study.sampler).__name__.lower().startswith(sampler[:3])
    first = ask_and_tell(sweeper, study, 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    # a rerun: a new process, the same seed and storage; the sampler goes on from the study, it does not restart
    sweeper, study = make_sweeper(tmp_path / "a", over)
    second = ask_and_tell(sweeper, study, 10)
    assert len(second) == 3 and [t.number for t in first + second] == list(range(6))  # n_trials counts finished trials
    sets = param_sets(first + second)
    assert len(set(sets)) == 6, sets
    # same seed + same storage state = same suggestion; another seed, another suggestion
    twin, twin_study = make_sweeper(tmp_path / "b", over)
    assert twin._next_trial(twin_study).params == second[0].params
    other, other_study = make_sweeper(tmp_path / "c", [*over, "seed=4"])
    assert other._next_trial(other_study).params != second[0].params


def test_grid_sampler_visits_every_point_once_across_reruns(tmp_path):
    over = ["hydra/sweeper/sampler=grid", "hydra.sweeper.params=null", "hydra.sweeper.n_trials=50"]
    space = ["model.net.num_res_blocks=choice(1,2,3)", "data.batch_size=range(4,12,4)"]
    sweeper, study = make_sweeper(tmp_path, over, space)
    assert sweeper.n_trials == 6  # capped at the grid's size
    first = []
    for _ in range(2):
        trial = sweeper._next_trial(study)
        sweep_study.tell(study, trial, values=[1.0])
        first.append(trial)
    sweeper, study = make_sweeper(tmp_path, over, space)
    rest = []
    while (trial := sweeper._next_trial(study)) is not None:
        sweep_study.tell(study, trial, values=[1.0])
        rest.append(trial)
    points = param_sets(first + rest)
    assert len(points) == 6 and len(set(points)) == 6
    with pytest.raises(SynthError, match="sampler=grid needs a finite set of values for every key, but model.optimizer.lr"):
        make_sweeper(tmp_path / "x", ["hydra/sweeper/sampler=grid"])


def test_trials_of_dead_workers_are_failed_as_interrupted_and_replaced(tmp_path):
    over = ["hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0"]
    sweeper, study = make_sweeper(tmp_path, over)
    ask_and_tell(sweeper, study, 1)
    dead, silent, elsewhere = (sweeper._next_trial(study) for _ in range(3))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    set_attr = study._storage.set_trial_system_attr
    set_attr(dead._trial_id, sweep_study.WORKER, f"{sweep_study.me().rsplit(':', 1)[0]}:{proc.pid}")  # this host, process gone
    set_attr(silent._trial_id, sweep_study.WORKER, "another-host:1")  # another machine, no heartbeat for an hour
    set_attr(silent._trial_id, sweep_study.HEARTBEAT, time.time() - 3600)
    set_attr(elsewhere._trial_id, sweep_study.WORKER, "another-host:2")  # another machine, alive
    sweeper, study = make_sweeper(tmp_path, over)  # a rerun
    rest = ask_and_tell(sweeper, study, 5)
    trials = study.get_trials()
    assert [t.state.name for t in trials[1:4]] == ["FAIL", "FAIL", "RUNNING"]
    assert trials[1].user_attrs["interrupted"] and trials[2].user_attrs["interrupted"]
    assert [t.number for t in rest] == [4, 5]  # replaced: 3 finished + 1 running elsewhere = n_trials
    assert sweeper.stop_reason is None  # interrupted trials are not failures (max_failure_rate=0)


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_dashboard_and_load_study_open_the_storage_the_sweep_prints(tmp_path, storage):
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import wsgi

    sweeper, study = make_sweeper(tmp_path, [f"hydra.sweeper.storage={storage}"])
    ask_and_tell(sweeper, study, 2)
    addr = sweeper.address
    assert addr.endswith("optuna.db" if storage == "sqlite" else "optuna.journal") and Path(addr.split("///")[-1]).is_file()
    app = wsgi(addr)  # what `optuna-dashboard <address>` serves

    def get(path: str) -> dict:
        environ, status = {"PATH_INFO": path, "wsgi.errors": io.StringIO()}, []
        setup_testing_defaults(environ)
        body = b"".join(app(environ, lambda s, h, *_: status.append(s)))
        assert status[0].startswith("200"), (status, environ["wsgi.errors"].getvalue()[-2000:])
        return json.loads(body)

    summaries = get("/api/studies")["study_summaries"]
    assert [(s["study_name"], s["directions"]) for s in summaries] == [("ddpm_phantom", ["minimize"])]
    shown = get(f"/api/studies/{summaries[0]['study_id']}")["trials"]
    assert [(t["number"], t["state"]) for t in shown] == [(0, "Complete"), (1, "Complete")]
    assert {p["name"] for p in shown[0]["params"]} == {"model.optimizer.lr", "model.net.num_res_blocks", "model.ema_decay", "data.batch_size"}
    loaded = optuna.load_study(study_name="ddpm_phantom", storage=sweep_study.open_storage(addr))
    assert [t.state for t in loaded.trials] == [TrialState.COMPLETE] * 2


def test_storage_choices_and_refusals(tmp_path):
    assert sweep_study.address("sqlite", tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert sweep_study.address("journal", tmp_path) == f"{tmp_path.resolve()}/optuna.journal"
    assert sweep_study.address("postgresql://me@db/optuna", tmp_path) == "postgresql://me@db/optuna"
    assert sweep_study.address(str(tmp_path / "x.journal"), ".") == str((tmp_path / "x.journal").resolve())
    with pytest.raises(SynthError, match="hydra.sweeper.storage=redis is not a storage synth knows"):
        sweep_study.address("redis", tmp_path)
    with pytest.raises(SynthError, match="direction=minimize does not fit optimized_metric \\(2 metric"):
        make_sweeper(tmp_path, ["optimized_metric=[val/loss,val/mmd]"])
