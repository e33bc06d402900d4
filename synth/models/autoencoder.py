"""Autoencoder family: KL-VAE and plain AE on MONAI AutoencoderKL, optional patch-adversarial term.
Both generate by decoding draws from a latent prior. `fitted` (the default): a diagonal Gaussian matched to the
aggregate posterior of the training data, per latent element mean E[mu] and variance Var(mu) + E[sigma^2] (the
spread of the posterior means plus the mean posterior variance; sigma = 0 for the AE), from running moments kept
current in every checkpoint. With the small KL weights that give sharp reconstructions (1e-4 by default) the
aggregate posterior is far from N(0, I), so `standard` (decode N(0, I) draws) is an option, not the default.
Validation logs the set-level sample metric of synth/models/base.py (`val/mmd_rbf`) besides reconstruction."""
from __future__ import annotations

from typing import Any

import logging

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build
from synth.models.metrics import psnr, ssim

PRIORS = ("standard", "fitted")
log = logging.getLogger(__name__)


def _fill_missing_posterior_variance(module, state_dict, prefix, *_) -> None:
    """Checkpoints written before E[sigma^2] was kept: load them with 0 (exact for the AE, whose sigma is 0)."""
    key = prefix + "latent_post_var"
    if key not in state_dict and prefix + "latent_mean" in state_dict:
        state_dict[key] = torch.zeros_like(module.latent_post_var)
        if not module.deterministic and module.latent_prior == "fitted":
            log.warning("this VAE checkpoint predates the posterior variance in its fitted prior: it samples with Var(mu) "
                        "only (narrower than the aggregate posterior); train again (or resume a few steps) to refit it")


class AutoencoderModule(GenerativeModule):
    def __init__(
        self,
        net: Any,                    # AutoencoderKL config
        optimizer: Any,
        discriminator: Any = None,   # PatchDiscriminator config (used when adv_weight > 0)
        d_optimizer: Any = None,
        kl_weight: float = 1e-4,     # 0: plain autoencoder (deterministic latents)
        latent_prior: str = "fitted",  # fitted: the aggregate posterior's moments | standard: N(0, I)
        adv_weight: float = 0.0,
        adv_start_step: int = 0,
        grad_clip: float | None = 1.0,
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        if latent_prior not in PRIORS:
            raise SynthError(f"model.latent_prior={latent_prior} is unknown: use one of {PRIORS}")
        self.net = build(net)
        self.kl_weight = float(kl_weight)
        self.deterministic = self.kl_weight == 0.0
        self.latent_prior = latent_prior
        self.adv_weight = float(adv_weight)
        self.adv_start_step = int(adv_start_step)
        self.grad_clip = grad_clip
        self.d_optimizer_cfg = d_optimizer
        levels = len(net["channels"])
        self.check_divisible(2 ** (levels - 1), f"the autoencoder has {levels} levels")
        self.latent_shape = (int(net["latent_channels"]), *[s // 2 ** (levels - 1) for s in self.image_shape[1:]])
        self.prior_momentum = 0.01  # running moments follow about the last 100 steps (cumulative before that)
        self.register_buffer("latent_mean", torch.zeros(self.latent_shape))
        self.register_buffer("latent_sq", torch.ones(self.latent_shape))  # running E[mu^2]
        self.register_buffer("latent_post_var", torch.zeros(self.latent_shape))  # running E[sigma^2] (0 for the AE)
        self.register_load_state_dict_pre_hook(_fill_missing_posterior_variance)
        self.register_buffer("latent_updates", torch.zeros((), dtype=torch.long))
        self.disc = build(discriminator) if self.adv_weight > 0 else None
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares") if self.disc is not None else None
        self.automatic_optimization = self.disc is None

    # ----- forward and losses -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sigma = self.net.encode(x)
        z = mu if self.deterministic else self.net.sampling(mu, sigma)
        return z, mu, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the mean latent (what evaluation and users see)."""
        return self.net.decode(self.net.encode(x)[0])

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).clamp(-1, 1)

    # ----- the autoencoder interface latent diffusion uses ---------------------------------------------------
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)

    def _losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z, mu, sigma = self.encode(x)
        recon = self.net.decode(z)
        l1 = F.l1_loss(recon.float(), x.float())
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).mean()
        loss = l1 + self.kl_weight * kl
        return {"loss": loss, "l1": l1, "kl": kl, "recon": recon, "mu": mu, "sigma": sigma}

    def _adv_active(self) -> bool:
        return self.disc is not None and self.global_step >= self.adv_start_step

    # ----- training ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int):
        x = batch["image"]
        out = self._losses(x)
        self._accumulate_latents(out["mu"], out["sigma"])
        bs = x.shape[0]
        self.log_dict({"train/l1": out["l1"], "train/kl": out["kl"]}, batch_size=bs)
        if self.automatic_optimization:
            self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
            return out["loss"]

        opt_g, opt_d = self.optimizers()
        adversarial = self._adv_active()  # decided once: the generator step below advances global_step
        loss_g = out["loss"]
        if adversarial:
            adv_g = self.adv_loss(self.disc(out["recon"].contiguous().float())[-1], target_is_real=True, for_discriminator=False)
            loss_g = loss_g + self.adv_weight * adv_g
            self.log("train/adv_g", adv_g, batch_size=bs)
        self.manual_step(opt_g, loss_g, self.grad_clip)
        self.log("train/loss", loss_g, prog_bar=True, batch_size=bs)
        if adversarial:
            fake = self.disc(out["recon"].detach().contiguous().float())[-1]
            real = self.disc(x.contiguous().float())[-1]
            loss_d = 0.5 * (
                self.adv_loss(fake, target_is_real=False, for_discriminator=True)
                + self.adv_loss(real, target_is_real=True, for_discriminator=True)
            )
            self.manual_step(opt_d, loss_d, self.grad_clip, count=False)
            self.log("train/adv_d", loss_d, batch_size=bs)

    def configure_optimizers(self):
        opt_g = self.build_optimizer(self.optimizer_cfg, self.net.parameters())
        if self.disc is None:
            return opt_g
        return [opt_g, self.build_optimizer(self.d_optimizer_cfg, self.disc.parameters())]

    def on_fit_start(self) -> None:
        if self.disc is not None:
            self.require_unused_parameters_under_ddp("an adversarial autoencoder")

    # ----- the fitted latent prior ------------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate_latents(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        """Running E[mu], E[mu^2] and E[sigma^2] of the training posteriors (per latent element), like batch
        norm's running stats with a cumulative average first; DDP broadcasts these buffers from rank 0."""
        self.latent_updates += 1
        rate = max(self.prior_momentum, 1.0 / float(self.latent_updates))
        mu = mu.detach().float()
        self.latent_mean.lerp_(mu.mean(0), rate)
        self.latent_sq.lerp_(mu.pow(2).mean(0), rate)
        if not self.deterministic:  # the AE decodes mu itself: no posterior spread
            self.latent_post_var.lerp_(sigma.detach().float().pow(2).mean(0), rate)

    @property
    def latent_std(self) -> torch.Tensor:
        """Std of the aggregate posterior per latent element: sqrt(Var(mu) + E[sigma^2])."""
        var_mu = (self.latent_sq - self.latent_mean.pow(2)).clamp_min(0)
        return (var_mu + self.latent_post_var).clamp_min(1e-8).sqrt()

    # ----- validation -------------------------------------------------------------------------------------
    def _eval_step(self, batch: dict, prefix: str) -> None:
        x = batch["image"]
        out = self._losses(x)
        recon = self(x).clamp(-1, 1)
        metrics = {
            f"{prefix}/l1": out["l1"],
            f"{prefix}/kl": out["kl"],
            f"{prefix}/psnr": psnr(recon, x),
            f"{prefix}/ssim": ssim(recon, x, self.spatial_dims),
        }
        self.log_dict(metrics, prog_bar=False, sync_dist=True, batch_size=x.shape[0])
        self.log(f"{prefix}/loss", out["loss"], prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")
        self.collect_val_images(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_sample_set_metrics(required=False)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # ----- sampling ---------------------------------------------------------------------------------------
    def prior_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` draws from the latent prior (what `sample` decodes)."""
        eps = torch.randn((n, *self.latent_shape), generator=generator, device=self._noise_device(generator)).to(self.device)
        return eps if self.latent_prior == "standard" else self.latent_mean + self.latent_std * eps

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        self._check_conditioning(condition)
        return self.net.decode(self.prior_latents(n, generator)).clamp(-1, 1)
