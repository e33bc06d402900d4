"""VQ-VAE (MONAI VQVAE): a vector-quantised autoencoder. It reconstructs; it generates through latent
diffusion on its latents (`model=ldm model.autoencoder_run=<this run>`)."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build
from synth.models.metrics import psnr, ssim


class VQVAEModule(GenerativeModule):
    can_sample = False

    def __init__(self, net: Any, optimizer: Any, **common) -> None:
        super().__init__(optimizer=optimizer, **common)
        net = OmegaConf.to_container(net, resolve=True) if OmegaConf.is_config(net) else dict(net)
        down = [tuple(int(v) for v in p) for p in net["downsample_parameters"]]
        up = [tuple(int(v) for v in p) for p in net["upsample_parameters"]]
        factor = math.prod(p[0] for p in down)
        self.check_divisible(factor, f"the VQ-VAE downsamples {factor}x")
        self.net = build(net, downsample_parameters=tuple(down), upsample_parameters=tuple(up))
        self.latent_shape = (int(net["embedding_dim"]), *[s // factor for s in self.image_shape[1:]])

    # ----- the autoencoder interface latent diffusion uses ---------------------------------------------------
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode_stage_2_inputs(x)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode_stage_2_outputs(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0].clamp(-1, 1)

    # ----- training ---------------------------------------------------------------------------------------
    def _losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, q_loss = self.net(x)
        l1 = F.l1_loss(recon.float(), x.float())
        return {"loss": l1 + q_loss, "l1": l1, "quantization": q_loss, "recon": recon}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._losses(batch["image"])
        bs = batch["image"].shape[0]
        self.log_dict({"train/l1": out["l1"], "train/quantization": out["quantization"]}, batch_size=bs)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        return out["loss"]

    def _eval_step(self, batch: dict, prefix: str) -> None:
        x = batch["image"]
        out = self._losses(x)
        recon = out["recon"].clamp(-1, 1)
        self.log_dict(
            {f"{prefix}/l1": out["l1"], f"{prefix}/quantization": out["quantization"],
             f"{prefix}/psnr": psnr(recon, x), f"{prefix}/ssim": ssim(recon, x, self.spatial_dims)},
            sync_dist=True, batch_size=x.shape[0],
        )
        self.log(f"{prefix}/loss", out["loss"], prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # ----- sampling: through latent diffusion -------------------------------------------------------------
    def check_sampling(self, condition: Any = None, **_: Any) -> None:
        raise SynthError("a VQ-VAE generates through latent diffusion: train python train.py model=ldm model.autoencoder_run=<this run dir>, then sample that run")

    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        self.check_sampling(condition)
