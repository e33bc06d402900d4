"""A training-time alarm for GAN mode collapse: one warning line per run when the adversarial game says the
generator has collapsed, judged over the last `window` generator steps by either sign:

- spread: the generated batch's mean pairwise distance is below SPREAD_RATIO of the real batch's (median over the
  window): the fakes are near-copies of each other while the real images are not;
- a discriminator that wins outright: its loss stays below D_LOSS_FLOOR at every step of the window (bce, lsgan,
  hinge; the wgan critic loss has no floor). A histology DCGAN collapsed to one checkerboard had 3e-5.
"""
from __future__ import annotations

import logging
import statistics
from collections import deque

import torch

log = logging.getLogger(__name__)
SPREAD_RATIO = 0.2   # fake spread / real spread below this (median over the window): collapsed
D_LOSS_FLOOR = 1e-3  # discriminator loss below this at every step of the window: it wins outright
REMEDY = "lower the learning rates (model.optimizer.lr, model.d_optimizer.lr), try model=wgan_gp or model.loss=hinge"


def spread(x: torch.Tensor) -> float:
    """Mean pairwise L2 distance between the images of a batch (NaN for fewer than two)."""
    if len(x) < 2:
        return float("nan")
    return float(torch.pdist(x.detach().float().flatten(1)).mean())


class CollapseWatch:
    def __init__(self, window: int = 50, loss_kind: str = "bce", remedy: str = REMEDY) -> None:
        self.window = int(window)                       # generator steps judged together; 0: off
        self.remedy = remedy                            # what the warning tells the user to try
        self.floor = loss_kind != "wgan"                # whether a near-zero discriminator loss means anything
        self.ratios: deque[float] = deque(maxlen=max(1, self.window))
        self.d_losses: deque[float] = deque(maxlen=max(1, self.window))
        self.warned = False

    def update(self, step: int, loss_d: float, real: torch.Tensor, fake: torch.Tensor) -> float | None:
        """Record one generator step; warn (once) when the window shows collapse. Returns the step's spread ratio."""
        if self.window <= 0:
            return None
        real_spread, fake_spread = spread(real), spread(fake)
        ratio = fake_spread / max(real_spread, 1e-8) if real_spread == real_spread and fake_spread == fake_spread else None
        if ratio is not None:
            self.ratios.append(ratio)
        self.d_losses.append(float(loss_d))
        if not self.warned and len(self.d_losses) == self.window:
            message = self._verdict()
            if message:
                self.warned = True
                log.warning(f"step {step}: the GAN looks collapsed: {message}; its samples are likely near-copies of one image: "
                            f"{self.remedy}, or keep an earlier checkpoint (val/mmd_rbf chooses best-*.ckpt)")
        return ratio

    def _verdict(self) -> str:
        signs = []
        if len(self.ratios) == self.window and (median := statistics.median(self.ratios)) < SPREAD_RATIO:
            signs.append(f"over the last {self.window} steps the generated batches spread {median:.2f}x as far as the real ones (median)")
        if self.floor and max(self.d_losses) < D_LOSS_FLOOR:
            signs.append(f"the discriminator loss stayed below {D_LOSS_FLOOR:g} for {self.window} steps (last {self.d_losses[-1]:.1e})")
        return " and ".join(signs)
