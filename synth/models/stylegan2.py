"""StyleGAN2 (Karras et al. 2020) training, 2D or 3D, on the networks of synth/models/stylegan2_nets.py: style
mixing in training, non-saturating logistic loss with lazy R1 (every k steps, scaled by k, the optimizer's lr and betas
adjusted by k/(k+1) as in the paper) and optional lazy path-length regularisation, the tracked mean w, and an EMA
generator that samples (validation, grids, generate.py; truncation psi from model.truncation); checkpoints hold both
generators. Same contracts as the GAN family (synth/models/gan.py): manual optimisation where a step is one batch (one
discriminator and one generator update), val/mmd_rbf as monitor, the collapse watch, DDP only with find_unused."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from synth.errors import SynthError
from synth.models.base import GenerativeModule, warmed_decay
from synth.models.collapse import CollapseWatch
from synth.models.gan import AdversarialHooks, d_loss_fn, g_loss_fn
from synth.models.stylegan2_nets import Discriminator, Generator, path_lengths, r1_penalty


def lazy_regularised(opt: torch.optim.Optimizer, every: int) -> torch.optim.Optimizer:
    """StyleGAN2 (appendix B): an optimizer whose loss gets a regulariser every `every` steps takes lr * c and betas ** c,
    c = every / (every + 1), as if the regulariser had its own steps (every=0: no regulariser, left as configured)."""
    if every:
        c = every / (every + 1)
        for group in opt.param_groups:
            group["lr"] *= c
            if "betas" in group:
                group["betas"] = tuple(b**c for b in group["betas"])
    return opt


class StyleGAN2Module(AdversarialHooks, GenerativeModule):
    ddp_name = "StyleGAN2"

    def __init__(
        self,
        optimizer: Any,
        d_optimizer: Any,
        latent_dim: int = 128,       # z
        w_dim: int = 128,            # style vector w
        mapping_layers: int = 8,
        mapping_lr_mul: float = 0.01,
        embed_dim: int = 32,         # conditional: class embedding beside z (the discriminator projects on its own)
        channel_base: int = 1024,    # channels at resolution r: min(channel_base // r, channel_max), both networks
        channel_max: int = 128,
        mixing_prob: float = 0.9,    # style mixing regularisation
        truncation: float = 1.0,     # psi at sampling (1: none; sample(..., truncation=) overrides it)
        r1_gamma: float = 1.0,       # R1 weight (gamma / 2 * ||grad D(real)||^2); 0: off
        r1_every: int = 16,          # lazy R1: every k steps, scaled by k
        pl_weight: float = 0.0,      # path-length regularisation (StyleGAN2: 2); 0: off
        pl_every: int = 4,
        pl_decay: float = 0.01,      # of the running mean path length
        pl_batch_shrink: int = 2,
        ema_decay: float = 0.998,    # EMA generator (0: a copy of the trained one)
        mbstd_group: int = 4,
        grad_clip: float | None = None,
        collapse_window: int = 50,
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        spatial = self.image_shape[1:]
        levels = math.log2(spatial[0] / 4)
        if len(set(spatial)) > 1 or levels < 1 or levels != int(levels):
            ok = ", ".join(str([4 * 2**k] * self.spatial_dims).replace(" ", "") for k in range(1, 7))
            raise SynthError(f"model=stylegan2 grows the image from a 4-voxel constant by doubling, so data.image_size={list(spatial)} "
                             f"cannot be made: use one power of two on every axis, e.g. {ok}")
        channels = [min(channel_base // (4 * 2**k), channel_max) for k in range(int(levels) + 1)]
        if min(channels) < 1:
            raise SynthError(f"model.channel_base={channel_base} leaves no channels at {spatial[0]} voxels: raise it to at least {spatial[0]}")
        if not 0 <= mixing_prob <= 1 or not 0 <= ema_decay < 1 or r1_gamma < 0 or pl_weight < 0 or min(r1_every, pl_every, pl_batch_shrink, mapping_layers) < 1:
            raise SynthError("model.mixing_prob must be in [0, 1], model.ema_decay in [0, 1), model.r1_gamma and model.pl_weight >= 0, "
                             "model.r1_every, model.pl_every, model.pl_batch_shrink and model.mapping_layers >= 1")
        c = self.image_shape[0]
        self.latent_dim = int(latent_dim)
        self.generator = Generator(self.spatial_dims, c, channels, self.latent_dim, w_dim, mapping_layers, mapping_lr_mul,
                                   self.num_classes, embed_dim)
        self.discriminator = Discriminator(self.spatial_dims, c, channels, self.num_classes, mbstd_group)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("pl_mean", torch.zeros([]))
        self.d_optimizer_cfg = d_optimizer
        self.mixing_prob, self.truncation, self.ema_decay = float(mixing_prob), float(truncation), float(ema_decay)
        self.r1_gamma, self.r1_every = float(r1_gamma), int(r1_every)
        self.pl_weight, self.pl_every, self.pl_decay, self.pl_batch_shrink = float(pl_weight), int(pl_every), float(pl_decay), int(pl_batch_shrink)
        self.grad_clip = grad_clip
        self.automatic_optimization = False
        self.collapse_watch = CollapseWatch(collapse_window, "bce", remedy="raise model.r1_gamma (a smoother "
                                            "discriminator), lower the learning rates (model.optimizer.lr, model.d_optimizer.lr)")

    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator, device=self._noise_device(generator)).to(self.device)

    def training_ws(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:
        """Styles for a training batch: with probability mixing_prob the layers from a random cutoff on take a second
        latent's w (one cutoff per batch, as in StyleGAN2)."""
        if torch.rand([]).item() >= self.mixing_prob:
            return self.generator.ws(self._z(n), labels)
        cutoff = int(torch.randint(1, self.generator.num_ws, []))
        return self.generator.ws(self._z(n), labels, mix_z=self._z(n), cutoff=cutoff)

    def configure_optimizers(self):
        opt_g = self.build_optimizer(self.optimizer_cfg, self.generator.parameters())
        opt_d = self.build_optimizer(self.d_optimizer_cfg, self.discriminator.parameters())
        return [lazy_regularised(opt_g, self.pl_every if self.pl_weight else 0),
                lazy_regularised(opt_d, self.r1_every if self.r1_gamma else 0)]

    # ----- training: one discriminator and one generator update per batch (max_steps counts batches) ----------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        real, n = batch["image"], batch["image"].shape[0]
        labels = batch["label"] if self.conditional else None  # fakes are drawn with the real batch's labels
        opt_g, opt_d = self.optimizers()
        step, logs, sparse = self.global_step, {}, {}
        with torch.no_grad():
            fake = self.generator.synthesis(self.training_ws(n, labels))
        r1_now = self.r1_gamma > 0 and step % self.r1_every == 0
        real_in = real.detach().requires_grad_(r1_now)
        d_real, d_fake = self.discriminator(real_in, labels), self.discriminator(fake, labels)
        loss_d = d_loss_fn("bce", d_real, d_fake)  # non-saturating logistic: softplus(-D(real)) + softplus(D(fake))
        if r1_now:
            sparse["train/r1"] = r1 = r1_penalty(d_real, real_in)
            loss_d = loss_d + self.r1_gamma / 2 * r1 * self.r1_every
        self.manual_step(opt_d, loss_d, self.grad_clip, count=False)  # only generator steps count

        self.toggle_optimizer(opt_g)  # the discriminator's weights take no gradient from the generator's loss
        ws = self.training_ws(n, labels)
        fake = self.generator.synthesis(ws)
        loss_g = g_loss_fn("bce", self.discriminator(fake, labels))  # softplus(-D(fake))
        with torch.no_grad():
            self.generator.w_avg.lerp_(ws[:, 0].mean(0).float(), 1 - 0.995)  # StyleGAN2's w_avg_beta; float under bf16 autocast
        if self.pl_weight and step % self.pl_every == 0:
            m = max(1, n // self.pl_batch_shrink)
            ws = self.training_ws(m, labels[:m] if labels is not None else None)
            lengths = path_lengths(self.generator.synthesis(ws), ws)
            self.pl_mean.lerp_(lengths.mean().detach().float(), self.pl_decay)
            sparse["train/pl"] = pl = (lengths - self.pl_mean).square().mean()
            loss_g = loss_g + self.pl_weight * self.pl_every * pl
        self.manual_step(opt_g, loss_g, self.grad_clip)
        self.untoggle_optimizer(opt_g)
        self.update_ema()
        logs.update({"train/loss_d": loss_d, "train/loss_g": loss_g, "train/d_real": d_real.mean(), "train/d_fake": d_fake.mean()})
        if self.global_rank == 0:  # one warning per run, not one per rank
            ratio = self.collapse_watch.update(self.global_step, float(loss_d.detach()), real, fake)
            if ratio is not None:
                logs["train/spread_ratio"] = ratio
        self.log_dict(logs, prog_bar=True, batch_size=n)
        if sparse:  # straight to the loggers, at this batch's step: self.log would repeat them at every later step of the epoch
            for logger in self.loggers:
                logger.log_metrics({k: float(v.detach()) for k, v in sparse.items()}, step=step)

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp towards G (decay warmed up: `warmed_decay`); buffers (the mean w) copied."""
        keep = warmed_decay(self.ema_decay, self.global_step)
        for ema, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            ema.lerp_(p, 1 - keep)
        for ema, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            ema.copy_(b)

    def critic(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.discriminator(x, labels)

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, truncation: float | None = None,
               noise: bool = True, use_ema: bool = True, **_: Any) -> torch.Tensor:
        """`n` images in [-1, 1] from the EMA generator (`use_ema=False`: the trained one); `truncation` psi (default
        model.truncation); `noise=False` leaves out the per-layer noise. Conditional models need `condition`."""
        self._check_conditioning(condition)
        labels = self.condition_labels(condition, n)
        net = self.g_ema if use_ema else self.generator
        ws = net.ws(self._z(n, generator), labels, truncation=self.truncation if truncation is None else float(truncation))
        return net.synthesis(ws, generator, noise).clamp(-1, 1)
