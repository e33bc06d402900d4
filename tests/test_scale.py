"""Scale-out without a cluster: submitit launches (a job runs; a preempted job is requeued and resumes from
last.ckpt), the SLURM, DeepSpeed and FSDP configs compose, DeepSpeed's strategy object builds, and multirun +
spawning DDP is refused. Optuna sweeps: tests/test_sweeps.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from synth.errors import SynthError
from synth.tasks import train
from tests.conftest import ROOT, TINY, compose_train, phantom, quick, run_script

TINY_DDPM = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=12), "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false", "callbacks.sample_grid.n=0"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}


# ----- launchers ------------------------------------------------------------------------------------------
def test_slurm_launcher_follows_the_trainer(tmp_path):
    res = run_script("train.py", ["--cfg", "all", "--resolve", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                  "trainer.num_nodes=2", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    launcher = res.stdout.split("  launcher:\n")[1].split("  sweeper:")[0]
    for line in ["nodes: 2", "tasks_per_node: 4", "gpus_per_node: 4", "partition: gpu", "account: lab", "SlurmLauncher"]:
        assert line in launcher, launcher
    res = run_script("train.py", ["--cfg", "all", "--resolve", "hydra/launcher=slurm", "trainer=ddp"], cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("synth: error: trainer.devices=auto: on SLURM")


def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def submitit_tasks(pid: int) -> list[int]:
    """The submitit job processes under `pid` (not their own children, which share the command line)."""

    def is_task(p: int) -> bool:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return False
        return b"submitit.core._submit" in cmd.split(b"\0")  # the module itself, not a path that names it

    def parent(p: int) -> int:
        try:
            return int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return -1

    return [p for p in _descendants(pid) if is_task(p) and not is_task(parent(p))]


@pytest.mark.slow
def test_submitit_local_job_is_requeued_on_preemption_and_resumes_from_last_ckpt(tmp_path):
    STEPS = 200
    # 200 steps (~20 s alone, longer under load): the signal must reach a job that still has steps to go; a 20-step
    # job could finish between its first checkpoint and the signal, and then there is nothing to requeue
    args = ["-m", "hydra/launcher=submitit_local", *TINY_DDPM, *quick(STEPS), "trainer.val_check_interval=20"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and last is None:
        last = next(iter(tmp_path.glob("outputs/train_multirun/*/0_*/checkpoints/last.ckpt")), None)
        time.sleep(0.2)
    assert last is not None, "no checkpoint was written"
    tasks = submitit_tasks(proc.pid)
    assert tasks, "the submitit task process was not found"
    os.kill(tasks[-1], signal.SIGUSR2)  # what SLURM sends before preempting or timing out a job
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    run = last.parents[1]
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == STEPS
    logs = "".join(p.read_text() for p in run.parents[0].glob(".submitit/*/*.out"))
    assert "this job is preempted" in logs and "requeued job: resuming from" in logs, logs[-3000:]
    assert len(list(run.parent.glob("0_*"))) == 1  # the same run dir, not a second one


def test_requeued_job_resumes_in_place(tmp_path):
    """A job under a submitit launcher whose run dir already holds last.ckpt (what a requeue looks like) resumes."""
    cfg = compose_train(tmp_path, [*TINY_DDPM, *quick(4), "hydra/launcher=submitit_local"])
    train(cfg)
    cfg = compose_train(tmp_path, [*TINY_DDPM, *quick(8), "hydra/launcher=submitit_local"])
    metrics, objs = train(cfg)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["global_step"] == 8 and objs["trainer"].global_step == 8
    assert (tmp_path / "run" / "csv" / "metrics.1.csv").is_file()  # the first attempt's log is kept
    # without a cluster launcher the same situation is a reused run dir, which is refused
    cfg = compose_train(tmp_path, [*TINY_DDPM, *quick(10)])
    with pytest.raises(SynthError, match="already belongs to another run"):
        train(cfg)


def test_multirun_with_spawning_ddp_is_refused(tmp_path):
    cfg = compose_train(tmp_path, [*TINY_DDPM, *quick(2), "trainer=ddp_cpu", "trainer.devices=2"])
    hydra_cfg = HydraConfig.get()
    with open_dict(hydra_cfg), read_write(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
    with pytest.raises(SynthError, match="cannot launch multi-process DDP jobs"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----- strategies -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy, stage", [("deepspeed_stage_2", 2), ("deepspeed_stage_3", 3)])
def test_deepspeed_strategy_object_builds(tmp_path, strategy, stage):
    pytest.importorskip("deepspeed")
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cfg = compose_train(tmp_path, [*TINY_DDPM, f"strategy={strategy}", "trainer=ddp"])
    obj = instantiate(cfg.strategy)
    assert isinstance(obj, DeepSpeedStrategy)
    assert obj.config["zero_optimization"]["stage"] == stage


def test_fsdp_strategy_object_builds(tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    cfg = compose_train(tmp_path, [*TINY_DDPM, "strategy=fsdp", "trainer=ddp"])
    obj = instantiate(cfg.strategy)
    assert isinstance(obj, FSDPStrategy)


@pytest.mark.slow
def test_gpu_strategies_script_runs_its_cpu_path(tmp_path):
    """benchmarks/gpu_strategies.py (the GPU check of ddp/deepspeed/fsdp) on its CPU path: train, sample, table."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_strategies.py"), "--cpu"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row = json.loads(res.stdout.splitlines()[0])
    assert row["strategy"] == "ddp" and row["steps"] == 20 and row["samples"] == 4 and row["val_loss"] > 0
