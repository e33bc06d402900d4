"""synth.runs, the one owner of run dirs: a dir is claimed by exactly one run (O_EXCL marker, also across processes),
a refused run leaves nothing that looks like a run, `run_dir=latest` is the newest run WITH a checkpoint (under
$PROJECT_ROOT/outputs), and a NaN validation metric never makes a best checkpoint."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from synth import runs
from synth.checkpointing import BestCheckpoint
from synth.errors import SynthError
from tests.conftest import ROOT, TINY, compose_train, phantom, quick, run_script


def test_a_run_dir_is_claimed_once(tmp_path):
    run = tmp_path / "run"
    runs.claim(run)
    assert runs.claimed_by_me(run) and runs.claim(run) == run  # the same run asking again
    runs.release(run)  # that run is over
    with pytest.raises(SynthError, match="already belongs to another run .*it ran there"):
        runs.claim(run)
    runs.claim(run, resume_in_place=True)  # a requeued job takes over the dir of an attempt that no longer runs
    assert runs.claimed_by_me(run)
    runs.release(run)


def test_a_dir_holding_other_files_is_not_claimed(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(SynthError, match="holds files that are not a synth run's"):
        runs.claim(tmp_path / "mine")


_CLAIM = """
import sys, time
from synth import runs
from synth.errors import SynthError
time.sleep(float(sys.argv[2]) - time.time())
try:
    runs.claim(sys.argv[1]); print("claimed", flush=True); time.sleep(2)
except SynthError as err:
    print("refused", flush=True)
"""


def test_two_processes_racing_for_one_dir_get_it_once(tmp_path):
    import time

    start = str(time.time() + 3)  # both processes try at the same instant
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path / "run"), start], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(2)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["claimed", "refused"]


def test_discard_removes_only_what_a_run_writes_before_training(tmp_path):
    run = tmp_path / "run"
    runs.claim(run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("x: 1")
    (run / "train.log").write_text("")
    assert runs.discard_unstarted(run) and not run.exists()
    other = tmp_path / "other"
    runs.claim(other)
    (other / "checkpoints").mkdir()
    assert not runs.discard_unstarted(other) and (other / "checkpoints").is_dir(), "a run that trained is never removed"


def _fake_run(outputs: Path, name: str, checkpoint: bool, age: int) -> Path:
    run = outputs / "train" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name: ddpm}\ndata: {name: phantom, spatial_dims: 2}\n")
    os.utime(run / "config.yaml", (age, age))
    if checkpoint:
        torch.save({"synth": {}, "state_dict": {}}, run / "checkpoints" / "last.ckpt")
    return run


def test_latest_is_the_newest_run_with_a_checkpoint_under_project_root(tmp_path, monkeypatch):
    trained = _fake_run(tmp_path / "outputs", "2026-01-01_trained", True, 1000)
    _fake_run(tmp_path / "outputs", "2026-01-02_refused", False, 2000)  # newer, but never trained
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    assert runs.resolve_run_dir("latest") == trained.resolve()
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(SynthError, match="run_dir=latest but no run under .*elsewhere/outputs holds a checkpoint"):
        runs.resolve_run_dir("latest")


def test_generate_latest_from_another_folder_with_project_root(tmp_path):
    """The entry script: `PROJECT_ROOT=<project> python generate.py run_dir=latest` from any folder."""
    cfg = compose_train(tmp_path, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), *quick(2), "callbacks.sample_grid.n=0"])
    from synth.tasks import train

    _, objs = train(cfg)
    project = tmp_path / "project"
    (project / "outputs" / "train").mkdir(parents=True)
    objs["run_dir"].rename(project / "outputs" / "train" / "2026-01-01_ddpm_phantom")
    _fake_run(project / "outputs", "2026-12-31_failed", False, 4_000_000_000)  # newer, no checkpoint: not "latest"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_script("generate.py", ["run_dir=latest", "n=2", "steps=2"], cwd=elsewhere, env={"PROJECT_ROOT": str(project)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list(project.glob("outputs/train/2026-01-01_ddpm_phantom/samples/*/sample_*.nii.gz"))) == 2
    assert not (elsewhere / "outputs").exists()


class _ValLoss(L.LightningModule):
    """Logs a given val/loss per validation (the checkpoint callback is what is tested, not a model)."""

    def __init__(self, values):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.values = list(values)

    def training_step(self, batch, i):
        return (self.w - batch[0]).pow(2).mean()

    def validation_step(self, batch, i):
        self.log("val/loss", torch.tensor(self.values[self.trainer.global_step // 2 - 1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("values,best_step", [([math.nan, 2.0, math.inf, 3.0], 4), ([math.nan, math.nan], None)])
def test_a_nan_validation_metric_never_makes_a_best_checkpoint(tmp_path, values, best_step):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 1)), batch_size=1)
    cb = BestCheckpoint(dirpath=tmp_path, filename="best-{step}", monitor="val/loss", mode="min", save_top_k=1, save_last=False)
    trainer = L.Trainer(max_steps=2 * len(values), val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1, callbacks=[cb],
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(_ValLoss(values), data, data)
    files = sorted(p.name for p in tmp_path.glob("best-*.ckpt"))
    assert files == ([] if best_step is None else [f"best-step={best_step}.ckpt"])
