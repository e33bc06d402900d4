"""Training-time pictures: a grid of real training images once, then a grid of samples at each validation
(rank 0 only), written into the run dir and sent to the loggers that take images (W&B, TensorBoard)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

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
            if pl_module.can_sample:
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
