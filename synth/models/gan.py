"""GAN family: DCGAN-style generator and discriminator/critic (MONAI Generator/Discriminator, 2D or 3D) trained
with manual optimization, gradient clipping inside the step, a choice of adversarial loss (bce, lsgan, hinge,
wgan), an optional gradient penalty (WGAN-GP), and optional class conditioning (model.num_classes > 0): a label
embedding concatenated to z in the generator, one-hot label maps as extra input channels of the discriminator.
Validation compares samples with the validation images as sets (`val/mmd_rbf`, synth/models/base.py); training
warns once when the game signals mode collapse (synth/models/collapse.py)."""
from __future__ import annotations

import functools

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build
from synth.models.collapse import CollapseWatch

LOSSES = ("bce", "lsgan", "hinge", "wgan")


@functools.lru_cache(maxsize=1)
def _lsgan() -> nn.Module:  # one instance: called three times per training step
    from monai.losses import PatchAdversarialLoss

    # no_activation_leastsq: Mao et al.'s LSGAN on the raw scores (MONAI's default squashes them with a sigmoid first,
    # as the autoencoder's patch-adversarial term, from MONAI's tutorials, keeps doing)
    return PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)


# MONAI's PatchAdversarialLoss is used where it is the same loss (least squares; tests/test_gan.py pins it). The others
# stay written out: its "bce" is sigmoid + BCELoss (the log clamped at -100, so the gradient vanishes once the
# discriminator saturates; softplus on the raw scores does not), its hinge generator loss is relu(1 - score) (it
# stops pushing at score 1) instead of the usual -score (Lim & Ye 2017, Miyato et al. 2018), and it has no WGAN loss.
def d_loss_fn(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator (critic) loss from its raw scores on real and fake images."""
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "lsgan":
        adv = _lsgan()
        return 0.5 * (adv(real, target_is_real=True, for_discriminator=True) + adv(fake, target_is_real=False, for_discriminator=True))
    if kind == "wgan":
        return fake.mean() - real.mean()  # minus the critic's Wasserstein-1 estimate
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()  # hinge


def g_loss_fn(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from the discriminator's raw scores on fake images."""
    if kind == "bce":
        return F.softplus(-fake).mean()  # non-saturating
    if kind == "lsgan":
        return 0.5 * _lsgan()(fake, target_is_real=True, for_discriminator=False)
    return -fake.mean()  # hinge, wgan


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],  # image batch -> scores (B, ...)
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,         # for the interpolation weights
) -> torch.Tensor:
    """Gulrajani et al. (2017): mean over samples of (||grad_x critic(x)||_2 - 1)^2 at x drawn uniformly on the
    segment between each real image and a fake one. The graph is kept so that the penalty trains the critic."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator, device=real.device, dtype=real.dtype)
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class AdversarialHooks:
    """Checks before fit and validation shared by the adversarial families (GANModule, StyleGAN2Module): GAN losses
    do not track quality, so validation compares sets of images (val/mmd_rbf, the monitor) and logs the critic's
    mean output on real and generated images. Needs `critic(x, labels)` and `ddp_name`."""

    ddp_name = "a GAN"

    def on_fit_start(self) -> None:
        self.require_unused_parameters_under_ddp(self.ddp_name)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and dm.meta["n_val"] < 2:
            raise SynthError(
                f"val/mmd_rbf compares sets of images but the validation split holds {dm.meta['n_val']}: "
                "add subjects or raise the val fraction of data.split"
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.collect_val_images(batch)

    def on_validation_epoch_end(self) -> None:
        kept = self.log_sample_set_metrics()  # val/mmd_rbf (the monitor) and val/mmd, from the sampling generator
        if kept is not None:
            real, labels, fake = kept
            self.log("val/d_real", self.critic(real, labels).mean())
            self.log("val/d_fake", self.critic(fake, labels).mean())


class GANModule(AdversarialHooks, GenerativeModule):
    def __init__(
        self,
        generator: Any,              # MONAI Generator config; shapes are derived here
        discriminator: Any,          # MONAI Discriminator config; in_shape derived here
        optimizer: Any,
        d_optimizer: Any,
        latent_dim: int = 128,
        channels: Sequence[int] = (256, 128, 64),  # generator width per upsampling level
        loss: str = "bce",
        gp_weight: float = 0.0,      # >0: gradient penalty on the discriminator (WGAN-GP: 10)
        n_disc: int = 1,             # discriminator steps per generator step
        embed_dim: int = 16,         # class embedding concatenated to z (conditional models only)
        grad_clip: float | None = 1.0,
        collapse_window: int = 50,   # generator steps the collapse warning judges together (0: off)
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        if loss not in LOSSES:
            raise SynthError(f"model.loss={loss} is unknown: use one of {LOSSES}")
        if loss == "wgan" and not gp_weight > 0:
            raise SynthError("model.loss=wgan needs a Lipschitz constraint on the critic: set model.gp_weight>0 (10 is usual)")
        if gp_weight and "BATCH" in str(discriminator.get("norm")).upper():
            raise SynthError(
                "model.gp_weight>0 needs per-sample gradients but the discriminator uses batch norm: "
                "set model.discriminator.norm=[GROUP,{num_groups:1}] (layer norm) or null"
            )
        if self.conditional and "INSTANCE" in str(discriminator.get("norm")).upper():
            raise SynthError(
                "a conditional GAN shows its discriminator constant label maps, which instance norm subtracts away: "
                "set model.discriminator.norm=[GROUP,{num_groups:1}] (layer norm) or null"
            )
        levels = len(channels)
        self.check_divisible(2**levels, f"the generator upsamples {levels} times")
        start = [s // 2**levels for s in self.image_shape[1:]]
        self.latent_dim = int(latent_dim)
        self.embed_dim = int(embed_dim) if self.conditional else 0
        self.embed = nn.Embedding(self.num_classes, self.embed_dim) if self.conditional else None
        self.generator = build(
            generator,
            latent_shape=[self.latent_dim + self.embed_dim],
            start_shape=[int(channels[0]), *start],
            channels=[*[int(c) for c in channels[1:]], self.image_shape[0]],
            strides=[2] * levels,
        )
        c, *spatial = self.image_shape
        self.discriminator = build(discriminator, in_shape=[c + self.num_classes, *spatial])
        self.check_divisible(2 ** len(discriminator["strides"]), "the discriminator downsamples by its strides")
        self.d_optimizer_cfg = d_optimizer
        self.loss_kind = loss
        self.gp_weight = float(gp_weight)
        self.n_disc = int(n_disc)
        self.grad_clip = grad_clip
        self.automatic_optimization = False
        self.collapse_watch = CollapseWatch(collapse_window, loss)

    # ----- networks ------------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return torch.tanh(self.generator(z))

    def critic(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Discriminator scores (B, 1); a conditional model sees one-hot label maps as extra channels."""
        if self.conditional:
            maps = F.one_hot(labels, self.num_classes).to(x.dtype).view(-1, self.num_classes, *[1] * self.spatial_dims)
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.discriminator(x)

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator, device=self._noise_device(generator)).to(self.device)

    def configure_optimizers(self):
        return [
            self.build_optimizer(self.optimizer_cfg, [*self.generator.parameters(), *(self.embed.parameters() if self.conditional else [])]),
            self.build_optimizer(self.d_optimizer_cfg, self.discriminator.parameters()),
        ]

    # ----- training ------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        real = batch["image"]
        labels = batch["label"] if self.conditional else None  # fakes are drawn with the real batch's labels
        n = real.shape[0]
        opt_g, opt_d = self.optimizers()
        logs = {}
        # The n_disc critic steps reuse this real batch (the textbook version draws a fresh one per critic step;
        # reusing it keeps one generator step per batch, so max_steps and val_check_interval count batches).
        for _ in range(self.n_disc):
            with torch.no_grad():
                fake = self(self._z(n), labels)
            d_real, d_fake = self.critic(real, labels), self.critic(fake, labels)
            loss_d = d_loss_fn(self.loss_kind, d_real, d_fake)
            if self.gp_weight:
                gp = gradient_penalty(lambda x: self.critic(x, labels), real, fake)
                loss_d = loss_d + self.gp_weight * gp
                logs["train/gp"] = gp
            self.manual_step(opt_d, loss_d, self.grad_clip, count=False)  # only generator steps count
        loss_g = g_loss_fn(self.loss_kind, self.critic(self(self._z(n), labels), labels))
        self.manual_step(opt_g, loss_g, self.grad_clip)
        logs.update({"train/loss_d": loss_d, "train/loss_g": loss_g, "train/d_real": d_real.mean(), "train/d_fake": d_fake.mean()})
        if self.global_rank == 0:  # one warning per run, not one per rank
            ratio = self.collapse_watch.update(self.global_step, float(loss_d.detach()), real, fake)
            if ratio is not None:
                logs["train/spread_ratio"] = ratio  # fake / real batch spread (about 1 when diverse)
        self.log_dict(logs, prog_bar=True, batch_size=n)

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        """`n` images in [-1, 1]; a conditional model needs `condition` (a class index or name, or a list of n)."""
        self._check_conditioning(condition)  # an unconditional model refuses one
        labels = self.condition_labels(condition, n)  # None when unconditional
        return self(self._z(n, generator), labels)
