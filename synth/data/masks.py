"""Masks to generate images for (mask-conditioned models): drawn from a data config's training split, or read from a
NIfTI / PNG file or a folder of them. Every mask comes back as (n, 1, *S) float32 in {0, 1} on the data's grid
(label > 0 is lesion); a mask of another size is refused, never resized silently.

`mask_source` returns the masks and a JSON-able record of where they came from (samples.json and the downstream
report carry it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synth.data.readers import is_image, read_image
from synth.data.transforms import lesion
from synth.errors import SynthError


def _as_item(arr: np.ndarray, spatial: list[int], name: str) -> np.ndarray:
    """A decoded label map -> (1, *S) in {0, 1}; 2D NIfTI files come as (X, Y, 1)."""
    a = np.asarray(arr)
    if a.ndim == len(spatial) + 1 and a.shape[-1] == 1 and len(spatial) == 2:
        a = a[..., 0]
    if list(a.shape) != spatial:
        raise SynthError(f"mask {name} has shape {list(a.shape)} but the model draws images of size {spatial}: "
                         "give masks on the data's grid (data.image_size), e.g. the mask_*.nii.gz that generate.py wrote")
    return lesion(a).astype(np.float32)[None]


def read_mask_files(path: Path, spatial: list[int]) -> tuple[np.ndarray, list[str]]:
    """One mask file, or every image file of a folder (sorted), as (k, 1, *S)."""
    path = Path(path).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if is_image(p) and p.name != "grid.png") if path.is_dir() else []
    if not files:
        raise SynthError(f"masks={path} is neither a mask file nor a folder holding NIfTI/PNG masks: pass one, or masks=train")
    return _read(files, spatial), [f.name for f in files]


def _read(files: list[Path], spatial: list[int]) -> np.ndarray:
    """Mask files (one label map each) as (k, 1, *S) in {0, 1}."""
    items = []
    for f in files:
        vol = read_image(f)
        if vol.array.shape[0] != 1:
            raise SynthError(f"mask {f} has {vol.array.shape[0]} channels: a mask is one label map (0 = background)")
        items.append(_as_item(vol.array[0], spatial, f.name))
    return np.stack(items)


def training_masks(data_cfg: Any, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """n masks drawn (without replacement while they last) from the training split of a data config."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True)) if OmegaConf.is_config(data_cfg) else OmegaConf.create(dict(data_cfg))
    with open_dict(cfg):
        cfg.masks = True
    dm = instantiate(cfg)
    masks = dm.mask_items("train").numpy()
    if not len(masks):
        raise SynthError(f"data {dm.name} has no training masks to draw: check data.split")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(masks))[:n] if n <= len(masks) else rng.integers(0, len(masks), n)
    return masks[idx], {"source": "train", "data": dm.name, "n_train_masks": int(len(masks)), "indices": [int(i) for i in idx],
                        "with_lesion": int((masks[idx].reshape(len(idx), -1).sum(1) > 0).sum())}


def mask_source(spec: Any, n: int, spatial: list[int], data_cfg: Any = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """`masks=train` (the run's training split) or `masks=<file|folder>` -> (n, 1, *S) masks and their record; a file
    or folder with fewer masks than n is cycled."""
    if spec in (None, ""):
        raise SynthError("this model draws images for given masks: pass masks=train (the run's training split) or masks=<folder|file>")
    if str(spec) == "train":
        if data_cfg is None:
            raise SynthError("masks=train needs the run's data config: pass run_dir=<run>")
        return training_masks(data_cfg, int(n), seed)
    items, names = read_mask_files(Path(str(spec)), spatial)
    k = int(n)
    idx = np.arange(k) % len(items)
    return items[idx], {"source": str(Path(str(spec)).resolve()), "files": [names[i] for i in idx],
                        "with_lesion": int((items[idx].reshape(k, -1).sum(1) > 0).sum())}


def paired_masks(folder: Path, spatial: list[int], n: int) -> np.ndarray:
    """The mask_*.nii.gz / mask_*.png files generate.py wrote beside n samples, as (n, 1, *S)."""
    files = sorted(p for p in Path(folder).iterdir() if p.name.startswith("mask_") and is_image(p))
    if len(files) != n:
        raise SynthError(f"{folder} holds {n} samples but {len(files)} mask_* files: pass a folder generate.py wrote for a mask-conditioned run")
    return _read(files, spatial)
