"""synth: train, sample and evaluate generative models of biomedical images from composed Hydra configs.

Importing the package is cheap (no torch): it only registers the OmegaConf resolvers the configs use.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"


def resolve_run_dir(run_dir: str) -> str:
    """`latest` -> newest run under outputs/ (single or multirun); otherwise the path itself, which must be a run dir."""
    path = Path(str(run_dir))
    if str(run_dir) == "latest":
        found = [*Path("outputs").glob("train/*/config.yaml"), *Path("outputs").glob("train_multirun/*/*/config.yaml"),
                 *Path("outputs").glob("sweeps/*/*/config.yaml")]
        runs = sorted(found, key=lambda p: p.stat().st_mtime)
        if not runs:
            _die("run_dir=latest but outputs/train holds no finished run: train one first (python train.py)")
        path = runs[-1].parent
    if not (path / "config.yaml").is_file():
        _die(f"run_dir={run_dir} is not a synth run dir (no config.yaml): pass a dir made by train.py")
    return str(path.resolve())


def _die(message: str) -> None:
    """Exit with one line; used where Hydra would otherwise print a traceback (resolvers, entry scripts)."""
    sys.stderr.write(f"synth: error: {message}\n")
    raise SystemExit(2)


def default_shape(spatial_dims: int, size_2d: int, size_3d: int):
    """The image size a data config uses unless data.image_size is given: square 2D, cubic 3D."""
    return OmegaConf.create([int(size_2d)] * 2 if int(spatial_dims) == 2 else [int(size_3d)] * int(spatial_dims))


def slurm_tasks(devices, accelerator: str = "gpu", gpus: bool = False):
    """SLURM tasks per node (one per device: Lightning reads its rank from SLURM) or, with `gpus`, GPUs per node
    (none for CPU jobs). `devices` must be a count: SLURM allocates before Lightning could look."""
    try:
        n = int(devices)
    except (TypeError, ValueError):
        n = -1
    if n < 1:
        _die(f"trainer.devices={devices}: on SLURM give the number of GPUs per node, e.g. trainer.devices=4 (SLURM allocates them before the job starts)")
    if gpus:
        return None if str(accelerator) == "cpu" else n
    return n


OmegaConf.register_new_resolver("slurm_tasks", slurm_tasks, replace=True)
OmegaConf.register_new_resolver("len", lambda x: len(x), replace=True)
OmegaConf.register_new_resolver("shape", default_shape, replace=True)
OmegaConf.register_new_resolver("resolve_run_dir", resolve_run_dir, replace=True)


_CHANNELS: dict[str, int] = {}


def channels_of(location) -> int:
    """`data.channels: ${channels_of:${data.root}}`: the channel count of a folder's (or CSV data list's) first image,
    read from its header (synth.data.readers.detect_channels; remembered per existing path); 1 when nothing is there."""
    from synth.data.readers import detect_channels

    key = str(location)
    if key not in _CHANNELS:
        if location in (None, "") or not Path(key).expanduser().exists():
            return 1
        _CHANNELS[key] = detect_channels(location)
    return _CHANNELS[key]


OmegaConf.register_new_resolver("channels_of", channels_of, replace=True)
