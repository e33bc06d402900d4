"""Latent diffusion: a diffusion UNet trained on the latents of a frozen autoencoder run (vae, ae or vqvae).
The latent scale factor is measured once at fit start (averaged over ranks) and kept in the checkpoint,
as is a copy of the autoencoder's weights, so sampling decodes with exactly what training encoded with.
Latents are never clipped: every scheduler built here (training and sampling) has clip_sample=False, and a config
asking for clipping is refused (the clamp to [-1, 1] is meant for images; latents have unit std after scaling,
so clipping them shrinks the samples' spread)."""
from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import OmegaConf

from synth.errors import SynthError
from synth.models.diffusion import DiffusionModule, _own_args

log = logging.getLogger(__name__)


def load_autoencoder(run_dir: str, image_shape: tuple[int, ...]):
    """The trained autoencoder of `run_dir` (best checkpoint, else last), checked against this run's data."""
    from synth.runs import load_frozen_run

    def refuse(cfg) -> str | None:
        family = cfg.model.get("family")
        return None if family == "autoencoder" else f"is a {family} run: latent diffusion needs a vae, ae or vqvae run"

    ae, _, run = load_frozen_run(run_dir, "model.autoencoder_run", image_shape, refuse, kind="a vae, ae or vqvae run", noun="autoencoder",
                                 train_first="train one first (python train.py model=vae ...) and pass its dir")
    return ae, run


def unclipped(scheduler: Any) -> dict:
    """The scheduler config with clip_sample=False (where its class takes it); a request to clip is refused."""
    from hydra.utils import get_class

    cfg = OmegaConf.to_container(scheduler, resolve=True) if OmegaConf.is_config(scheduler) else dict(scheduler)
    if cfg.get("clip_sample"):
        raise SynthError(
            "model.scheduler.clip_sample=true clamps the predicted latents to [-1, 1], but latents are not bounded (unit std "
            "after scaling): set model.scheduler.clip_sample=false (for a run made before this check: in its config.yaml)"
        )
    if "clip_sample" in _own_args(get_class(cfg["_target_"])):
        cfg["clip_sample"] = False  # MONAI's DDPM/DDIM default is True: say no explicitly
    return cfg


class LatentDiffusionModule(DiffusionModule):
    def __init__(self, autoencoder_run: str, net: Any, scheduler: Any, **kwargs: Any) -> None:
        scheduler = unclipped(scheduler)  # before loading the autoencoder: refuse a bad config at once
        image_shape = (int(kwargs["in_channels"]), *[int(s) for s in kwargs["image_size"]])
        ae, run = load_autoencoder(autoencoder_run, image_shape)
        net = OmegaConf.to_container(net, resolve=True) if OmegaConf.is_config(net) else dict(net)
        latent_channels = int(ae.latent_shape[0])
        net.update(in_channels=latent_channels, out_channels=latent_channels)
        super().__init__(net=net, scheduler=scheduler, sample_shape=ae.latent_shape, **kwargs)
        self.autoencoder = ae.requires_grad_(False).eval()
        self.autoencoder_run = str(run)
        self.config_updates = {"model.autoencoder_run": str(run)}  # the saved config names it absolutely
        self.register_buffer("scale_factor", torch.tensor(0.0))  # 0: not measured yet

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: batch-norm / dropout stay in inference mode
        return self

    @torch.no_grad()
    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode_latents(x) * self.scale_factor

    def from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode_latents(z / self.scale_factor)

    @torch.no_grad()
    def on_fit_start(self) -> None:
        """scale = 1 / std of the training latents (up to 8 batches, averaged over ranks): unit-variance latents."""
        if float(self.scale_factor) > 0:  # resumed: keep the checkpoint's
            return
        latents = []
        for i, batch in enumerate(self.trainer.datamodule.train_dataloader()):
            latents.append(self.autoencoder.encode_latents(batch["image"].to(self.device)).float())
            if i == 7:
                break
        std = torch.cat(latents).std()
        std = self.trainer.strategy.reduce(std, reduce_op="mean")
        self.scale_factor.fill_(1.0 / float(std.clamp_min(1e-6)))
        if self.trainer.is_global_zero:
            log.info(f"latent scale factor {float(self.scale_factor):.4f} (latent std {float(std):.4f})")
