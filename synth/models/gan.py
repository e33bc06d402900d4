"""GAN family: DCGAN-style generator and discriminator (MONAI Generator/Discriminator, 2D or 3D) trained
with manual optimization, gradient clipping inside the step, and a choice of adversarial loss."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build
from synth.models.metrics import mmd


def d_loss_fn(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()  # hinge


def g_loss_fn(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return F.softplus(-fake).mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1).pow(2).mean()
    return -fake.mean()  # hinge


LOSSES = ("bce", "lsgan", "hinge")


class GANModule(GenerativeModule):
    def __init__(
        self,
        generator: Any,              # MONAI Generator config; shapes are derived here
        discriminator: Any,          # MONAI Discriminator config; in_shape derived here
        optimizer: Any,
        d_optimizer: Any,
        latent_dim: int = 128,
        channels: Sequence[int] = (256, 128, 64),  # generator width per upsampling level
        loss: str = "bce",
        n_disc: int = 1,
        grad_clip: float | None = 1.0,
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        if loss not in LOSSES:
            raise SynthError(f"model.loss={loss} is unknown: use one of {LOSSES}")
        levels = len(channels)
        self.check_divisible(2**levels, f"the generator upsamples {levels} times")
        start = [s // 2**levels for s in self.image_shape[1:]]
        self.latent_dim = int(latent_dim)
        self.generator = build(
            generator,
            latent_shape=[self.latent_dim],
            start_shape=[int(channels[0]), *start],
            channels=[*[int(c) for c in channels[1:]], self.image_shape[0]],
            strides=[2] * levels,
        )
        self.discriminator = build(discriminator, in_shape=list(self.image_shape))
        self.check_divisible(2 ** len(discriminator["strides"]), "the discriminator downsamples by its strides")
        self.d_optimizer_cfg = d_optimizer
        self.loss_kind = loss
        self.n_disc = int(n_disc)
        self.grad_clip = grad_clip
        self.automatic_optimization = False
        self._val_real: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.generator(z))

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator, device=self._noise_device(generator)).to(self.device)

    def configure_optimizers(self):
        return [
            self.build_optimizer(self.optimizer_cfg, self.generator.parameters()),
            self.build_optimizer(self.d_optimizer_cfg, self.discriminator.parameters()),
        ]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        real = batch["image"]
        n = real.shape[0]
        opt_g, opt_d = self.optimizers()
        for _ in range(self.n_disc):
            with torch.no_grad():
                fake = self(self._z(n))
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)
            loss_d = d_loss_fn(self.loss_kind, d_real, d_fake)
            self.manual_step(opt_d, loss_d, self.grad_clip, count=False)
        loss_g = g_loss_fn(self.loss_kind, self.discriminator(self(self._z(n))))
        self.manual_step(opt_g, loss_g, self.grad_clip)
        self.log_dict(
            {"train/loss_d": loss_d, "train/loss_g": loss_g, "train/d_real": d_real.mean(), "train/d_fake": d_fake.mean()},
            prog_bar=True, batch_size=n,
        )

    # ----- validation: a set-level signal, since GAN losses do not track quality ---------------------------
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and dm.meta["n_val"] < 2:
            raise SynthError(
                f"val/mmd compares sets of images but the validation split holds {dm.meta['n_val']}: "
                "add subjects or raise the val fraction of data.split"
            )

    def on_validation_epoch_start(self) -> None:
        self._val_real = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val_real.append(batch["image"])

    def on_validation_epoch_end(self) -> None:
        if not self._val_real:
            return
        real = torch.cat(self._val_real)[:256]
        self._val_real = []
        g = torch.Generator(device=self.device).manual_seed(1234)
        fake = self.sample(len(real), generator=g)
        self.log("val/mmd", mmd(real, fake), prog_bar=True, sync_dist=True)
        self.log("val/d_real", self.discriminator(real).mean(), sync_dist=True)
        self.log("val/d_fake", self.discriminator(fake).mean(), sync_dist=True)

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        self._check_conditioning(condition)
        return self(self._z(n, generator))
