"""Faults and security (issue #6): a killed run resumes to the same final step; checkpoints are written
atomically; a NaN/inf loss stops the run and keeps the last good checkpoint; run dirs are never reused;
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

from synth.checkpoint_io import AtomicCheckpointIO, partial_path
from synth.errors import SynthError
from synth.tasks import load_checkpoint, load_run, resolve_resume, run_cli, train
from tests.conftest import ROOT, TINY, compose_train, phantom, quick, run_script


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


# ----- SIGKILL during training, then the same command with ckpt_path=last ---------------------------------------
KILL_RUN = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=32, n=12), "data.batch_size=8", "trainer=cpu", "trainer.max_steps=60",
            "trainer.val_check_interval=5", "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "callbacks.sample_grid.n=0"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_final_step(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *KILL_RUN], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not list(tmp_path.glob("outputs/train/*/checkpoints/last.ckpt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (killed,) = tmp_path.glob("outputs/train/*")
    assert not (killed / "run.json").exists(), "killed before the end"
    last = killed / "checkpoints" / "last.ckpt"
    step = load_checkpoint(last)["global_step"]
    assert 5 <= step < 60
    before = {p.name: p.read_bytes() for p in (killed / "checkpoints").glob("*.ckpt")}

    res = run_script("train.py", [*KILL_RUN, "ckpt_path=last"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (resumed,) = [p for p in tmp_path.glob("outputs/train/*") if p != killed]  # a new run dir, never the killed one
    info = json.loads((resumed / "run.json").read_text())
    assert info["global_step"] == 60 and load_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] == 60
    logged = pd.read_csv(resumed / "csv" / "metrics.csv")["step"]
    assert logged.min() >= step, f"the resumed run started at step {logged.min()}, not at the checkpoint's {step}"
    assert {p.name: p.read_bytes() for p in (killed / "checkpoints").glob("*.ckpt")} == before, "the killed run is left as it was"


def test_ckpt_path_last_is_the_newest_run_with_a_checkpoint(tmp_path):
    outputs = tmp_path / "outputs"
    with pytest.raises(SynthError, match="ckpt_path=last but no run under"):
        resolve_resume("last", outputs)
    runs = []
    for i, name in enumerate(["2026-01-01_a", "2026-01-02_b", "2026-01-03_c"]):
        ck = outputs / "train" / name / "checkpoints"
        ck.mkdir(parents=True)
        if name.endswith("c"):
            continue  # the newest dir (e.g. the one this very command made) holds no checkpoint yet
        torch.save({"synth": {}, "state_dict": {}, "global_step": i}, ck / "last.ckpt")
        os.utime(ck / "last.ckpt", (1000 + i, 1000 + i))
        runs.append(ck / "last.ckpt")
    assert resolve_resume("last", outputs) == str(runs[-1])
    assert resolve_resume(str(runs[0].parents[1]), outputs) == str(runs[0])  # a run dir: its last.ckpt


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
        run_cli(train, cfg)
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
    with pytest.raises(SynthError, match="already holds a run: it is never overwritten"):
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
    attempts = (lambda: load_checkpoint(evil), lambda: resolve_resume(str(evil)), lambda: load_run(run, str(evil)))
    for attempt in attempts:
        with pytest.raises(SynthError, match="holds pickled Python objects, which synth never loads"):
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

