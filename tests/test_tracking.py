"""Tracking: W&B offline by default with losses, samples and evaluation metrics in its run files, the same metrics
in CSV and TensorBoard, no secret written anywhere, one W&B run per multirun job, and `train.py -m ... evaluate=true`
ending with the comparison table of its jobs."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.conftest import TINY, phantom, quick, run_script

SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like a W&B key; must never be written


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_API_KEY": SECRET, "WANDB_SILENT": "true", **extra}


def _tiny(model: str) -> list[str]:
    return [f"model={model}", *TINY[model], *phantom(2, size=16, n=20), *quick(4), "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "evaluate=true", "evaluate_n=12"]


def _no_secret(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the W&B key was written to {path}"


@pytest.mark.slow
def test_wandb_offline_run_has_training_and_evaluation_metrics(tmp_path):
    res = run_script("train.py", [*_tiny("ddpm"), "logger=many"], cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    run = next((tmp_path / "outputs" / "train").iterdir())
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "W&B must be offline unless the user set WANDB_MODE"
    records = next(offline[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"val/loss", b"eval/frd", b"eval/frd_noise_vs_real", b"samples"):
        assert key in records, key
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    frd = [float(r["eval/frd"]) for r in rows if r.get("eval/frd")]
    assert len(frd) == 1 and frd[0] > 0
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "eval" / "after_training" / "metrics.json").is_file()
    _no_secret(tmp_path / "outputs")


@pytest.mark.slow
def test_multirun_with_evaluate_ends_with_the_comparison_table(tmp_path):
    # each family at its default size (16 px phantom images keep it cheap)
    args = ["-m", "model=vae,dcgan,ddpm", *phantom(2, size=16, n=20), *quick(4), "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "evaluate=true", "evaluate_n=12", "logger=wandb"]
    res = run_script("train.py", args, cwd=tmp_path, env=_env(), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "train_multirun").iterdir())
    table = (sweep / "compare" / "compare.md").read_text()
    for model in ("vae", "dcgan", "ddpm"):
        assert sum(f"| {model} " in line or f"_{model}_" in line for line in table.splitlines()) >= 1, table
    rows = list(csv.DictReader((sweep / "compare" / "compare.csv").open()))
    assert sorted(r["model"] for r in rows) == ["dcgan", "ddpm", "vae"]
    assert "comparison of 3 runs" in res.stdout
    # one W&B run per job, plus the comparison's own
    assert len(list(sweep.glob("*_phantom/wandb/offline-run-*"))) == 3
    assert list((sweep / "compare").rglob("offline-run-*"))
    _no_secret(tmp_path / "outputs")
