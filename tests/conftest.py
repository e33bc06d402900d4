"""Shared fixtures: compose the real configs with Hydra's compose API into tmp run dirs, tiny model flavours."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One compute thread per process, here and in the scripts the tests start (they inherit the environment): the tests
# train tiny networks, where a second thread only adds synchronisation, and on a busy 2-core machine 2 threads per
# process made steps 10-30x slower. Set before torch is imported; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import synth  # noqa: F401  (resolvers)
import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# Tiny flavour of each model: same code path, a fraction of the compute (what CI trains). The flavours are defined
# once, in conf/experiment/tiny_*.yaml, which the benchmarks' smoke runs compose too.
TINY = {
    "ddpm": ["experiment=tiny_ddpm"], "ldm": ["experiment=tiny_ddpm"], "rflow": ["experiment=tiny_rflow"],
    "vae": ["experiment=tiny_vae"], "ae": ["experiment=tiny_vae"],
    "dcgan": ["experiment=tiny_gan"], "wgan_gp": ["experiment=tiny_gan"],
    "vqvae": ["experiment=tiny_vqvae"],
    "stylegan2": ["experiment=tiny_stylegan2"],
}
MODELS = ["ae", "vae", "dcgan", "wgan_gp", "stylegan2", "ddpm", "rflow"]


def phantom(spatial_dims: int = 2, size: int = 16, n: int = 12, channels: int = 1) -> list[str]:
    shape = ",".join([str(size)] * spatial_dims)
    return [
        "data=phantom", f"data.spatial_dims={spatial_dims}", f"data.image_size=[{shape}]", f"data.channels={channels}",
        f"data.source.n_subjects={n}", "data.batch_size=4",
    ]


def quick(steps: int = 4) -> list[str]:
    """A few steps with one validation and checkpoints at the end."""
    return ["debug=default", "trainer.max_epochs=-1", f"trainer.max_steps={steps}", "trainer.limit_val_batches=1",
            f"trainer.val_check_interval={steps}", "trainer.check_val_every_n_epoch=null", "trainer.detect_anomaly=false", "callbacks.sample_grid.n=2"]


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The train config as train.py would see it, with its run dir in tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    run_dir = tmp_path / "run"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    return cfg


@pytest.fixture
def train_cfg(tmp_path):
    def make(model: str, overrides: list[str] = (), dims: int = 2, steps: int = 4, **data) -> DictConfig:
        return compose_train(tmp_path, [f"model={model}", *TINY[model], *phantom(dims, **data), *quick(steps), *overrides])
    return make


def run_script(script: str, args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an entry script the way a user does, from `cwd` (its outputs/ lands there)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def dark_and_bright(tmp_path_factory) -> Path:
    """Two classes of 32x32 phantom slices that differ in brightness only: dark in 0..100, bright in 155..255."""
    from PIL import Image

    from synth.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("two_classes")
    for cls, lo, hi in [("dark", 0, 100), ("bright", 155, 255)]:
        (root / cls).mkdir()
        for i in range(24):
            img = make_phantom((32, 32), seed=i)["image"][0]
            img = (img - img.min()) / (img.max() - img.min())
            Image.fromarray(np.round(lo + img * (hi - lo)).astype(np.uint8)).save(root / cls / f"{i:02d}.png")
    return root
