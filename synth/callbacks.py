"""Training-time callbacks: `SampleGrid` (a grid of real training images once, then a grid of samples at each
validation, rank 0 only, written into the run dir and sent to the loggers that take images) and
`FiniteGuard` (stops a run whose loss or weights stop being finite, before a checkpoint can save them)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from synth.errors import SynthError
from synth.io import image_grid, is_rgb, is_volume_axes, save_grid, save_grid_image


class SampleGrid(L.Callback):
    def __init__(self, n: int = 16, every_n_epochs: int = 1, seed: int = 0, dirpath: str | None = None) -> None:
        self.n, self.every, self.seed, self.dirpath = int(n), max(1, int(every_n_epochs)), int(seed), dirpath
        self._validations = 0

    def _dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.default_root_dir) / "grids")

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        """grids/real.png: training images beside which the sample grids can be judged."""
        if self.n <= 0 or not trainer.is_global_zero or trainer.datamodule is None:
            return
        real = trainer.datamodule.images("train", self.n).numpy()
        meta = pl_module.data_meta
        save_grid(real, self._dir(trainer) / "real.png", volume_axes=is_volume_axes(meta), rgb=is_rgb(meta))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.n <= 0:
            return
        self._validations += 1
        if (self._validations - 1) % self.every or not trainer.is_global_zero:
            return
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        kind = "step"
        with torch.no_grad():
            if pl_module.mask_conditioned:  # images for validation masks (as many as there are, up to n)
                masks = trainer.datamodule.mask_items("val", self.n).to(pl_module.device)
                images = pl_module.sample(len(masks), condition=masks, generator=g, progress=False)
            elif pl_module.can_sample:
                labels = torch.arange(self.n) % pl_module.num_classes if pl_module.conditional else None  # classes in turn
                images = pl_module.sample(self.n, condition=None if labels is None else labels.tolist(), generator=g, progress=False)
            else:  # generates only through another model: show what it reconstructs
                kind = "recon"
                images = pl_module.reconstruct(trainer.datamodule.images("val", self.n).to(pl_module.device))
        images = images.float().cpu().numpy()
        meta = pl_module.data_meta
        out = self._dir(trainer) / f"{kind}_{trainer.global_step:06d}.png"
        grid = image_grid(images, volume_axes=is_volume_axes(meta), rgb=is_rgb(meta))
        save_grid_image(grid, out)
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image("samples", [grid], step=trainer.global_step)
            elif name == "TensorBoardLogger":
                img = grid[None] if grid.ndim == 2 else np.moveaxis(grid, -1, 0)
                logger.experiment.add_image("samples", img, trainer.global_step)


class FiniteGuard(L.Callback):
    """Stop the run with a one-line SynthError when a training loss is NaN/inf (checked every
    `every_n_steps`, agreed across DDP ranks), and refuse to write a checkpoint whose weights are not finite:
    the checkpoints on disk keep the last good step."""

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every = max(1, int(every_n_steps))

    @staticmethod
    def _fixes(trainer: L.Trainer) -> str:
        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt" if getattr(trainer.checkpoint_callback, "dirpath", None) else None
        kept = f"{last} holds the last good step" if last is not None and last.is_file() else "no checkpoint was written"
        return (f"training stopped, {kept}; lower the learning rate (model.optimizer.lr), train in full precision "
                "(trainer.precision=32-true), or check the data")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every:
            return
        losses = {}
        if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
            losses["loss"] = outputs["loss"]
        elif isinstance(outputs, torch.Tensor):
            losses["loss"] = outputs
        for key, value in trainer.callback_metrics.items():  # what manual-optimization families log
            if key.startswith("train/") and isinstance(value, torch.Tensor) and value.numel() == 1:
                losses[key] = value
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = ", ".join(bad) or "the loss on another rank"
            raise SynthError(f"the training loss became NaN/inf at step {trainer.global_step} ({what}): {self._fixes(trainer)}")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise SynthError(
                f"the weights became NaN/inf by step {trainer.global_step} ({bad[0]}{' ...' if len(bad) > 1 else ''}), "
                f"so no checkpoint was written: {self._fixes(trainer)}"
            )
