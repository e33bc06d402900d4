"""Turning a trained module into files: batched sampling with a progress bar, one NIfTI (or PNG for RGB
data) per sample with the data's geometry, a grid PNG, and samples.json with the cost of generation and the sampler
actually used, defaults resolved (name, steps, eta, guidance, ema, seed; null for families without a sampler).
Mask-conditioned models take `condition` = masks (n, 1, *S): each sample is written with its mask beside it
(mask_XXXXX.nii.gz, same geometry) and samples.json records where the masks came from (`masks`)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from synth.data.intensity import write_sample_nifti
from synth.errors import SynthError
from synth.io import affine_from_meta, is_rgb, is_volume_axes, save_grid, save_nifti, save_png


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthError(f"device={device} but no CUDA GPU is visible: use device=cpu (or auto)")
    return torch.device(device)


def write_samples(
    model,                        # a GenerativeModule with trained weights
    out_dir: Path,                # fresh folder; refuses one that already holds samples
    n: int,
    batch_size: int = 16,
    seed: int = 0,
    condition: Any = None,
    grid: bool = True,
    masks_info: dict | None = None,  # mask-conditioned: where the masks (condition) came from, for samples.json
    **sampler: Any,               # sampler/steps/guidance/eta for diffusion; ignored by other families
) -> dict:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.glob("sample_*")):
        raise SynthError(f"{out_dir} already holds samples: it is never overwritten, pick another output dir")
    if n < 1 or batch_size < 1:
        raise SynthError(f"n={n} and batch_size={batch_size} must both be >= 1")
    sampler = {k: v for k, v in sampler.items() if v is not None}
    paired = model.mask_conditioned
    if paired and condition is not None:
        condition = np.asarray(condition.cpu() if isinstance(condition, torch.Tensor) else condition, dtype=np.float32)
        if len(condition) != n:
            raise SynthError(f"{len(condition)} masks for n={n} samples: give exactly n masks")
    if isinstance(condition, (list, tuple)) and len(condition) != n:
        raise SynthError(f"condition lists {len(condition)} labels for n={n} samples: give one label, or exactly n")
    model.check_sampling(condition, **sampler)
    settings = model.sampling_settings(**sampler)  # what the request resolves to: recorded below
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = model.data_meta or {}
    affine = affine_from_meta(meta, model.spatial_dims)
    as_png = is_rgb(meta) and model.spatial_dims == 2

    model.eval()
    device = model.device
    written, shown = [], []
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = (settings or {}).get("steps") or 1
    with tqdm(total=n, desc="generating", unit="img", disable=None) as bar:
        for b, first in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - first)
            g = torch.Generator(device=device).manual_seed(seed + b)
            cond = condition[first:first + m] if isinstance(condition, (list, tuple, np.ndarray)) else condition
            images = model.sample(m, condition=cond, generator=g, progress=steps > 1, **sampler).float()
            if not torch.isfinite(images).all():  # never NaN/inf images as samples: the partial set is removed too
                for path in written:
                    path.unlink(missing_ok=True)
                raise SynthError(f"the {model.name} model produced NaN/inf values (batch {b}): its weights or this sampler setting are "
                                 "broken, so no sample was kept; use another checkpoint (ckpt=best) or another sampler / steps")
            images = images.cpu().numpy()
            for i, img in enumerate(images):
                name = f"sample_{first + i:05d}"
                written.append(save_png(img, out_dir / f"{name}.png") if as_png else write_sample_nifti(img, out_dir / f"{name}.nii.gz", affine, meta))
                if paired:  # the mask this sample was drawn for, on the same grid
                    mask, mname = cond[i], f"mask_{first + i:05d}"
                    written.append(save_png(mask * 2 - 1, out_dir / f"{mname}.png") if as_png else save_nifti(mask, out_dir / f"{mname}.nii.gz", affine))
            if len(shown) < 64:
                shown.extend(images[: 64 - len(shown)])
            bar.update(m)
    seconds = time.perf_counter() - start
    if grid:
        save_grid(np.stack(shown), out_dir / "grid.png", volume_axes=is_volume_axes(meta), rgb=is_rgb(meta))
    info = {
        "n": n,
        "batch_size": batch_size,
        "device": str(device),
        "seconds": round(seconds, 3),
        "seconds_per_sample": round(seconds / n, 4),
        "sampler": None if settings is None else {**settings, "seed": seed},  # batch b draws with seed + b
        "seed": seed,
        "condition": "masks" if paired else condition,
        "masks": masks_info if paired else None,
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "files": [p.name for p in written],
    }
    (out_dir / "samples.json").write_text(json.dumps(info, indent=2))
    return info
