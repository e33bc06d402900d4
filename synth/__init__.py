"""synth: train, sample and evaluate generative models of biomedical images from composed Hydra configs.

Importing the package is cheap (no torch): it only registers the OmegaConf resolvers the configs use.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from synth.errors import SynthError

__version__ = "0.1.0"


def default_shape(spatial_dims: int, size_2d: int, size_3d: int):
    """The image size a data config uses unless data.image_size is given: square 2D, cubic 3D."""
    return OmegaConf.create([int(size_2d)] * 2 if int(spatial_dims) == 2 else [int(size_3d)] * int(spatial_dims))


def by_dims(spatial_dims: int, value_2d, value_3d):
    """`${by_dims:${data.spatial_dims},<2D value>,<3D value>}`: a data setting whose default differs in 2D and 3D."""
    value = value_2d if int(spatial_dims) == 2 else value_3d
    return OmegaConf.create(list(value)) if isinstance(value, (list, tuple)) else value


def slurm_tasks(devices, accelerator: str = "gpu", gpus: bool = False):
    """SLURM tasks per node (one per device: Lightning reads its rank from SLURM) or, with `gpus`, GPUs per node
    (none for CPU jobs). `devices` must be a count: SLURM allocates before Lightning could look."""
    try:
        n = int(devices)
    except (TypeError, ValueError):
        n = -1
    if n < 1:
        raise SynthError(f"trainer.devices={devices}: on SLURM give the number of GPUs per node, e.g. trainer.devices=4 (SLURM allocates them before the job starts)")
    if gpus:
        return None if str(accelerator) == "cpu" else n
    return n


def resolve_run_dir(run_dir, log_dir=None) -> str:
    """`latest` -> the newest run (under log_dir, else $PROJECT_ROOT/outputs) that holds a checkpoint; else the run dir itself."""
    from synth.runs import resolve_run_dir as resolve

    return str(resolve(run_dir, log_dir))


OmegaConf.register_new_resolver("slurm_tasks", slurm_tasks, replace=True)
OmegaConf.register_new_resolver("len", lambda x: len(x), replace=True)
OmegaConf.register_new_resolver("shape", default_shape, replace=True)
OmegaConf.register_new_resolver("by_dims", by_dims, replace=True)
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
