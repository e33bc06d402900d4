"""Faults and security: a SIGKILL loses at most one validation interval (last.ckpt is written at EVERY validation)
and the rerun resumes from exactly that step; Ctrl-C / SIGTERM lose no step (a checkpoint at the step the signal
reached, one line with the resume command); checkpoints are written atomically; a NaN/inf loss stops the run and
keeps the last good checkpoint; a NaN validation metric never makes a best checkpoint; run dirs are never reused;
checkpoints and saved configs cannot run code; a default run touches no network and no secret is written."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from omegaconf import OmegaConf

from synth.checkpoint_io import AtomicCheckpointIO, partial_path
from synth.cli import run_task
from synth.errors import SynthError
from synth.runs import load_checkpoint, load_run, resolve_resume
from synth.tasks import train
from tests.conftest import ROOT, TINY, compose_train, phantom, quick, run_script


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


# ----- SIGKILL / SIGINT / SIGTERM during training ---------------------------------------------------------------------
INTERVAL = 5
LONG_RUN = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=12), "data.batch_size=4", "trainer=cpu", "trainer.max_steps=60",
            f"trainer.val_check_interval={INTERVAL}", "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "logger.csv.flush_logs_every_n_steps=1", "trainer.enable_progress_bar=false",
            "callbacks.sample_grid.n=0",
            "model.monitor_mode=max"]  # val/loss falls, so the "best" never improves after the first validation


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}


def _ckpt_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001  (not there yet)
        return -1


def _steps_trained(run: Path) -> int:
    """Optimizer steps the run logged (train/loss rows, step index 0 = the first step), flushed at every step."""
    try:
        df = pd.read_csv(run / "csv" / "metrics.csv")
    except (OSError, pd.errors.EmptyDataError):
        return 0
    return int(df.loc[df["train/loss"].notna(), "step"].max()) + 1 if "train/loss" in df else 0


def _start(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_loses_at_most_one_validation_interval_and_the_rerun_resumes_there(tmp_path):
    proc = _start(tmp_path, LONG_RUN)
    deadline = time.time() + 300
    try:  # wait for the checkpoint of the 5th validation: with last.ckpt following the (never improving) best it never comes
        while True:
            last = next(iter(tmp_path.glob("outputs/train/*/checkpoints/last.ckpt")), None)
            if last is not None and _ckpt_step(last) >= 5 * INTERVAL:
                break
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, f"last.ckpt never reached step {5 * INTERVAL} (it holds step {_ckpt_step(last) if last else None})"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = last.parents[1]
    assert not (killed / "run.json").exists(), "killed before the end"
    saved, trained = _ckpt_step(last), _steps_trained(killed)
    assert saved % INTERVAL == 0 and 0 <= trained - saved <= INTERVAL, f"checkpoint at {saved}, {trained} steps trained"
    before = {p.name: p.read_bytes() for p in (killed / "checkpoints").glob("*.ckpt")}

    res = run_script("train.py", [*LONG_RUN, "ckpt_path=last"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (resumed,) = [p for p in tmp_path.glob("outputs/train/*") if p != killed]  # a new run dir, never the killed one
    info = json.loads((resumed / "run.json").read_text())
    assert info["global_step"] == 60 and _ckpt_step(resumed / "checkpoints" / "last.ckpt") == 60
    logged = pd.read_csv(resumed / "csv" / "metrics.csv")
    assert int(logged.loc[logged["train/loss"].notna(), "step"].min()) == saved, "the rerun starts at the checkpoint's step"
    assert {p.name: p.read_bytes() for p in (killed / "checkpoints").glob("*.ckpt")} == before, "the killed run is left as it was"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_loses_no_step(tmp_path, signum):
    args = [*LONG_RUN, "trainer.max_steps=100000", "trainer.val_check_interval=1000"]  # no validation before the signal
    proc = _start(tmp_path, args)
    deadline = time.time() + 300
    try:
        while True:
            run = next(iter(tmp_path.glob("outputs/train/*")), None)
            if run is not None and (run / "csv" / "metrics.csv").is_file() and _steps_trained(run) >= 7:
                break
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.poll() is not None else "too slow"
            time.sleep(0.05)
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("synth:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    name = signal.Signals(signum).name
    saved = _ckpt_step(run / "checkpoints" / "last.ckpt")
    assert f"stopped by {name} at step {saved}" in lines[0] and f"ckpt_path={run}" in lines[0]
    assert saved == _steps_trained(run), "the checkpoint holds every step trained: none lost"

    res = run_script("train.py", [*LONG_RUN, "trainer.max_steps=" + str(saved + 3), f"ckpt_path={run}"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (resumed,) = [p for p in tmp_path.glob("outputs/train/*") if p != run]
    logged = pd.read_csv(resumed / "csv" / "metrics.csv")
    assert sorted(logged.loc[logged["train/loss"].notna(), "step"].astype(int)) == [saved, saved + 1, saved + 2]


def test_ckpt_path_last_is_the_newest_run_of_the_same_model_and_data(tmp_path):
    outputs = tmp_path / "outputs"
    cfg = OmegaConf.create({"ckpt_path": "last", "paths": {"log_dir": str(outputs)},
                            "model": {"name": "ddpm"}, "data": {"name": "phantom", "spatial_dims": 2}})
    with pytest.raises(SynthError, match="ckpt_path=last but no run of model=ddpm on data=phantom"):
        resolve_resume(cfg, tmp_path / "this_run")
    made = {}
    for i, (name, model, data) in enumerate([("a", "ddpm", "phantom"), ("b", "ddpm", "phantom"), ("c", "dcgan", "phantom"),
                                              ("d", "ddpm", "mni152"), ("e", "ddpm", "phantom")]):
        run = outputs / "train" / f"2026-01-0{i + 1}_{name}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(f"model: {{name: {model}}}\ndata: {{name: {data}, spatial_dims: 2}}\n")
        os.utime(run / "config.yaml", (1000 + i, 1000 + i))
        if name != "e":  # the newest ddpm/phantom dir never reached a checkpoint (failed, or still starting)
            torch.save({"synth": {}, "state_dict": {}, "global_step": i}, run / "checkpoints" / "last.ckpt")
        made[name] = run
    assert resolve_resume(cfg, made["e"]) == str(made["b"] / "checkpoints" / "last.ckpt")  # not dcgan (c), not mni152 (d)
    assert resolve_resume(OmegaConf.merge(cfg, {"ckpt_path": str(made["a"])}), made["e"]) == str(made["a"] / "checkpoints" / "last.ckpt")


# ----- atomic checkpoint writes --------------------------------------------------------------------------------
class _FailsWhilePickling:
    def __reduce__(self):
        raise KeyboardInterrupt  # as if the process were interrupted half-way through writing


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"synth": {}, "state_dict": {"w": torch.ones(1000)}, "global_step": 1}, path)
    good = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"synth": {}, "state_dict": {"w": torch.zeros(1000)}, "global_step": 2, "x": _FailsWhilePickling()}, path)
    assert path.read_bytes() == good and not partial_path(path).exists()
    assert load_checkpoint(path)["global_step"] == 1


_SAVER = """
import sys, torch
from synth.checkpoint_io import AtomicCheckpointIO
io, step = AtomicCheckpointIO(), 0
while True:
    step += 1
    io.save_checkpoint({"synth": {}, "state_dict": {"w": torch.full((4_000_000,), float(step))}, "global_step": step}, sys.argv[1])
    print(step, flush=True)
"""


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """Kill -9 a process that rewrites a 16 MB last.ckpt in a loop (so the kill lands mid-save or between
    saves): the file still loads whole and holds one complete save."""
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # three complete saves, then kill during the following ones
        assert proc.stdout.readline().strip().isdigit()
    time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path)
    w = state["state_dict"]["w"]
    assert state["global_step"] >= 3 and w.numel() == 4_000_000 and bool((w == state["global_step"]).all())


# ----- NaN / inf loss -----------------------------------------------------------------------------------------------
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """A learning rate of 1e30 makes the weights huge after one step and the loss infinite at the next. The
    checkpoint of step 1 (finite weights) must survive untouched, and the run must stop with one line."""
    cfg = compose_train(tmp_path, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), *quick(6), "trainer.val_check_interval=1",
                                   "callbacks.sample_grid.n=0", "model.optimizer.lr=1e30", "model.ema_decay=0"])
    with pytest.raises(SystemExit) as exc:
        run_task(train, cfg)
    assert exc.value.code == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("synth: error")]
    assert "the training loss became NaN/inf at step 2" in line
    assert "last.ckpt holds the last good step" in line and "model.optimizer.lr" in line and "32-true" in line and "check the data" in line
    run = tmp_path / "run"
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 1 and finite(state)
    assert not (run / "run.json").exists()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One tiny default-config run (+1 sample after training) with every internet connection refused and
    recorded: (config, objects, connection attempts)."""
    attempts = []
    real_connect = socket.socket.connect

    def refuse(sock, address, *args):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network access in a test: {address}")
        return real_connect(sock, address, *args)

    def no_dns(*args, **kwargs):
        attempts.append(args)
        raise OSError("no DNS in a test")

    tmp = tmp_path_factory.mktemp("default_run")
    cfg = compose_train(tmp, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), *quick(2), "sample_after=1"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", no_dns)
        _, objs = train(cfg)
    return cfg, objs, attempts


def test_default_run_makes_no_network_connection(default_run):
    _, objs, attempts = default_run
    assert (objs["run_dir"] / "samples" / "after_training" / "sample_00000.nii.gz").is_file()
    assert attempts == []


def test_run_dir_holding_a_run_is_never_reused(default_run):
    """(also tests/test_train.py::test_run_dir_is_never_reused; the SIGKILL test checks that the killed run is untouched)"""
    cfg, objs, _ = default_run
    last = objs["run_dir"] / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(SynthError, match="already belongs to another run .* a run dir is never shared"):
        train(cfg)
    assert last.read_bytes() == before


def test_a_checkpoint_with_nan_weights_is_never_written(default_run):
    from synth.callbacks import FiniteGuard

    _, objs, _ = default_run
    trainer, model = objs["trainer"], objs["model"]
    last = objs["run_dir"] / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    assert any(isinstance(cb, FiniteGuard) for cb in trainer.callbacks)
    param = next(model.net.parameters())
    kept = param.detach().clone()
    with torch.no_grad():
        param.fill_(float("nan"))
    try:
        with pytest.raises(SynthError, match="the weights became NaN/inf by step 2 .* so no checkpoint was written"):
            trainer.save_checkpoint(str(last))
    finally:
        with torch.no_grad():
            param.copy_(kept)
    assert last.read_bytes() == good


# ----- security -----------------------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"synth": {"family": "diffusion"}, "state_dict": {}, "payload": _RunsCode(marker)}, evil)
    run = tmp_path / "run"  # generate.py run_dir=run ckpt=evil.ckpt
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  _target_: synth.models.DiffusionModule\n  family: diffusion\n  name: ddpm\n")
    resume = OmegaConf.create({"ckpt_path": str(evil), "paths": {}})
    attempts = (lambda: load_checkpoint(evil), lambda: resolve_resume(resume, tmp_path / "new"), lambda: load_run(run, str(evil)))
    for attempt in attempts:
        with pytest.raises(SynthError, match="holds pickled Python objects .*, which synth never loads"):
            attempt()
    # Lightning's own resume path (trainer.fit(ckpt_path=...)) loads through our CheckpointIO: weights_only too
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()


def test_saved_config_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model: !!python/object/apply:pathlib.Path.touch [{marker}]\n")
    with pytest.raises(SynthError, match="it is not a config written by train.py"):
        load_run(run)
    assert not marker.exists()


def test_wandb_key_is_never_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    secret = "0123456789abcdef-synth-test-secret-key"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    cfg = compose_train(tmp_path, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), *quick(2), "callbacks.sample_grid.n=0",
                                   "logger=wandb", "trainer.log_every_n_steps=1"])
    train(cfg)
    import wandb

    wandb.finish()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("wandb" in str(p) for p in files), "the wandb logger ran (offline)"
    leaked = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []



@pytest.mark.slow
def test_sigterm_to_rank_zero_stops_every_ddp_rank_with_the_same_checkpoint(tmp_path):
    """DDP over 2 CPU processes: SIGTERM reaches rank 0 only; all ranks agree at the next step boundary, the
    checkpoint holds that step, and no rank is left behind waiting for the others."""
    args = [*LONG_RUN, "trainer=ddp_cpu", "data.batch_size=2", "trainer.max_steps=100000", "trainer.val_check_interval=1000"]
    proc = _start(tmp_path, args)
    deadline = time.time() + 400
    try:
        while True:
            run = next(iter(tmp_path.glob("outputs/train/*")), None)
            if run is not None and (run / "csv" / "metrics.csv").is_file() and _steps_trained(run) >= 3:
                break
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.poll() is not None else "too slow"
            time.sleep(0.1)
        ranks = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path) in _cwd(p) and p.name != str(proc.pid)]
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    saved = _ckpt_step(run / "checkpoints" / "last.ckpt")
    assert f"stopped by SIGTERM at step {saved}" in err and saved == _steps_trained(run)
    time.sleep(2)
    assert ranks and not [p for p in ranks if p.exists()], "a DDP rank outlived the run"


def _cwd(proc: Path) -> str:
    try:
        return os.readlink(proc / "cwd")
    except OSError:
        return ""
