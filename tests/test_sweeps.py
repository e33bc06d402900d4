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

TINY_DDPM = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=24), "trainer.enable_progress_bar=false",
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
    for storage in ("sqlite", "journal"):  # a study made with another direction is refused, not reused
        where = tmp_path / storage
        make_sweeper(where, [f"hydra.sweeper.storage={storage}"])
        with pytest.raises(SynthError, match=r"study ddpm_phantom in .* was created with directions \['minimize'\], not \['maximize'\]: start a new study"):
            make_sweeper(where, [f"hydra.sweeper.storage={storage}", "hydra.sweeper.direction=maximize"])


# ----- real sweeps (train.py -m) ----------------------------------------------------------------------------
def _sweep_dir(tmp_path: Path, name: str = "ddpm_phantom") -> Path:
    return tmp_path / "outputs" / "sweeps" / name


def _no_alembic(tmp_path: Path, *texts: str) -> None:
    """No alembic (SQLAlchemy migration) line in the terminal output nor in any log the sweep wrote."""
    logs = [p.read_text(errors="replace") for p in tmp_path.rglob("*.log") if p.is_file()]
    assert not any("alembic" in text.lower() for text in [*texts, *logs])


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating_a_trial(tmp_path):
    sweep_dir = _sweep_dir(tmp_path)
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *SWEEP]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if (sweep_dir / "optuna.db").is_file() and any(t.state == TrialState.COMPLETE for t in _study(sweep_dir)):
            break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # kill the sweep right after its first trial finished
    first.wait()
    before = _study(sweep_dir)
    assert _states(before) in (["COMPLETE"], ["COMPLETE", "RUNNING"]), _states(before)
    first_run = next(sweep_dir.glob("0_*"))
    stamp = (first_run / "run.json").stat().st_mtime_ns

    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "study ddpm_phantom: 1 of 3 trials finished" in res.stdout + res.stderr
    after = _study(sweep_dir)
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(after) == len(before) + 2  # n_trials counts finished trials; only the missing ones ran
    assert all(t.user_attrs.get("interrupted") for t in after if t.state == TrialState.FAIL)  # the killed one, if it had started
    sets = param_sets(after)
    assert len(set(sets)) == len(sets), sets  # the seeded sampler went on from the study: no trial repeats another
    assert (first_run / "run.json").stat().st_mtime_ns == stamp  # the first trial was not redone
    assert "model:" in (sweep_dir / "best_config.yaml").read_text()
    assert (sweep_dir / "trials.csv").read_text().count("\n") == len(after) + 1
    best = OmegaConf.load(sweep_dir / "best.yaml")
    assert best.value == pytest.approx(min(t.value for t in complete)) and Path(best.run_dir).name.startswith(f"{best.trial}_")
    _no_alembic(tmp_path, res.stdout, res.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("rate, ok", [(0.5, True), (0.0, False)])
def test_failed_trials_are_recorded_and_end_the_sweep_only_past_max_failure_rate(tmp_path, rate, ok):
    # grid over two group-norm sizes: 8 trains, 3 does not divide the channels and the run is refused
    args = [*[a for a in SWEEP if "norm_num_groups" not in a], "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.max_failure_rate={rate}", "hydra.sweeper.params=null", "model.net.norm_num_groups=choice(8,3)"]
    res = run_script("train.py", ["-m", *args], cwd=tmp_path)
    trials = _study(_sweep_dir(tmp_path))
    if ok:
        assert res.returncode == 0, res.stderr[-3000:]
        assert _states(trials) == ["COMPLETE", "FAIL"]
        failed = next(t for t in trials if t.state == TrialState.FAIL)
        assert "norm_num_groups=3 does not divide" in failed.user_attrs["error"]
        assert (_sweep_dir(tmp_path) / "best_config.yaml").is_file()
    else:
        assert res.returncode == 2, res.stderr[-3000:]
        line = res.stderr.strip().splitlines()[-1]
        assert line.startswith("synth: error: sweep stopped: 1 trials failed, more than max_failure_rate allows"), line
        assert "FAIL" in _states(trials)


@pytest.mark.slow
def test_hopeless_trial_is_pruned_and_keeps_its_run(tmp_path):
    # the grid runs lr=1e-4 first (seed 1 keeps the listed order), then lr=0.3, whose loss is worse at the first
    # validation: the median pruner (one finished trial is enough here) stops it there
    args = [*[a for a in SWEEP if "max_steps" not in a], "trainer.max_steps=9", "hydra/sweeper/sampler=grid", "hydra.sweeper.seed=1",
            "hydra.sweeper.params=null", "model.optimizer.lr=choice(1e-4,0.3)", "hydra.sweeper.pruner.n_startup_trials=1"]
    res = run_script("train.py", ["-m", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    good, bad = _study(_sweep_dir(tmp_path))
    assert good.params == {"model.optimizer.lr": 1e-4} and good.state == TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [3, 6, 9]  # reported at every validation
    assert bad.params == {"model.optimizer.lr": 0.3} and bad.state == TrialState.PRUNED, bad.state
    assert sorted(bad.intermediate_values) == [3] and bad.user_attrs["pruned_at_step"] == 3
    assert bad.intermediate_values[3] > good.intermediate_values[3] and bad.value == bad.intermediate_values[3]
    run = Path(bad.user_attrs["run_dir"])
    assert json.loads((run / "run.json").read_text())["global_step"] == 3 and (run / "checkpoints" / "last.ckpt").is_file()
    assert "sweep trial 1 pruned at step 3" in (run / "train.log").read_text()
    assert "trial 1 pruned at step 3" in res.stdout + res.stderr


@pytest.mark.slow
def test_two_workers_share_one_journal_study(tmp_path):
    args = [*SWEEP, "hydra.sweeper.storage=journal", "hydra.sweeper.n_trials=3"]
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *args]
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    sweep_dir = _sweep_dir(tmp_path)
    addr = next(line.split("storage: ")[1].split()[0] for line in outs[0].splitlines() if "storage: " in line)
    assert addr == str((sweep_dir / "optuna.journal").resolve())
    trials = optuna.load_study(study_name="ddpm_phantom", storage=sweep_study.open_storage(addr)).trials  # what the sweep printed
    assert [t.number for t in trials] == [0, 1, 2] and _states(trials) == ["COMPLETE"] * 3
    assert len(set(param_sets(trials))) == 3
    assert len({t.system_attrs[sweep_study.WORKER] for t in trials}) == 2  # both workers ran trials of the one study
    assert sorted(p.name.split("_")[0] for p in sweep_dir.glob("*_ddpm_phantom")) == ["0", "1", "2"]
    _no_alembic(tmp_path, *outs)


@pytest.mark.slow
def test_pareto_sweep_writes_the_front(tmp_path):
    args = [*SWEEP, "sweep=ddpm_pareto", "evaluate_n=12", "model.sampling_steps=choice(2,5,10)", "model.net.num_res_blocks=1"]
    res = run_script("train.py", ["-m", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep_dir = _sweep_dir(tmp_path, "ddpm_pareto_phantom")
    trials = [t for t in _study(sweep_dir, "ddpm_pareto_phantom") if t.state == TrialState.COMPLETE]
    assert len(trials) == 3 and all(len(t.values) == 2 and t.values[0] > 0 and t.values[1] > 0 for t in trials)

    def dominated(t) -> bool:
        return any(all(a <= b for a, b in zip(o.values, t.values)) and o.values != t.values for o in trials)

    front = sorted(t.number for t in trials if not dominated(t))
    import pandas as pd

    table = pd.read_csv(sweep_dir / "pareto.csv")
    assert sorted(table["trial"]) == front and list(table.columns[:3]) == ["trial", "eval/frd", "eval/seconds_per_sample"]
    best = OmegaConf.load(sweep_dir / "best.yaml")
    assert sorted(e.trial for e in best.pareto_front) == front and list(best.objectives) == ["eval/frd", "eval/seconds_per_sample"]
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"eval/frd", "eval/seconds_per_sample"} <= set(pd.read_csv(sweep_dir / "trials.csv").columns)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vae", "dcgan"])
def test_shipped_search_spaces_run(tmp_path, model):
    args = [f"model={model}", *TINY[model], *phantom(2, size=16, n=24), "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "callbacks.sample_grid.n=0", f"sweep={model}", *QUICK, "trainer.max_steps=2",
            "trainer.val_check_interval=2", "hydra.sweeper.n_trials=1"]
    res = run_script("train.py", ["-m", *args], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = _study(_sweep_dir(tmp_path, f"{model}_phantom"), f"{model}_phantom")
    assert trial.state == TrialState.COMPLETE and trial.value >= 0 and "model.optimizer.lr" in trial.params
    assert (_sweep_dir(tmp_path, f"{model}_phantom") / "best_config.yaml").is_file()


@pytest.mark.slow
def test_submitit_sweep_runs_trials_in_parallel_and_a_preempted_trial_resumes(tmp_path):
    """hydra/launcher=submitit_local stands in for SLURM: two trials in flight (n_jobs=2, one journal study); one job
    gets SLURM's preemption signal, submitit requeues it with the same overrides (same run dir, same sweep_trial),
    it resumes from its last.ckpt and its trial completes."""
    # 60 steps: the preemption signal must reach a job that still has steps to go (both are seen at step 5)
    args = [*[a for a in SWEEP if "max_steps" not in a and "val_check" not in a], "trainer.max_steps=60", "trainer.val_check_interval=5",
            "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=journal",
            "hydra/sweeper/pruner=none"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweep_dir = _sweep_dir(tmp_path)
    deadline, lasts = time.time() + 400, []
    while time.time() < deadline and proc.poll() is None and len(lasts) < 2:
        lasts = list(sweep_dir.glob("*_ddpm_phantom/checkpoints/last.ckpt"))
        time.sleep(0.2)
    from tests.test_scale import submitit_tasks

    tasks = submitit_tasks(proc.pid)
    assert len(lasts) == 2 and len(tasks) == 2, (lasts, tasks)  # both trials training at once
    os.kill(tasks[-1], signal.SIGUSR2)  # what SLURM sends before preempting or timing out a job
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(sweep_dir, storage="journal")
    assert _states(trials) == ["COMPLETE", "COMPLETE"]
    assert sorted(p.name for p in sweep_dir.glob("*_ddpm_phantom")) == ["0_ddpm_phantom", "1_ddpm_phantom"]  # no third dir
    logs = [p.read_text() for p in sweep_dir.glob(".submitit/*/*.out")]
    assert sum("this job is preempted" in log and "requeued job: resuming from" in log for log in logs) == 1, logs
    for t in trials:
        assert json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["global_step"] == 60
        assert sorted(t.intermediate_values) == list(range(5, 61, 5))  # the resumed job went on reporting to its own trial
