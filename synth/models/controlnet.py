"""Mask-conditioned diffusion: a MONAI `ControlNet` trained on (lesion mask -> image) beside the frozen UNet of a
trained ddpm / rflow run (`model.base_run`), as in MONAI's ControlNet tutorial. The ControlNet starts as a copy of
the UNet's encoder (its zero-initialised output convolutions add nothing at first), training uses MONAI's
`ControlNetDiffusionInferer`, and sampling is the family's own denoising loop (synth/models/diffusion.py: DDPM, DDIM,
RFlow with the schedule's real previous timestep) with the ControlNet's residuals added to the UNet at every step.
The base UNet's weights (its EMA copy when it kept one) are copied into this run's checkpoints, as latent diffusion
copies its autoencoder; the ControlNet keeps its own EMA.

`sample(n, condition=masks)`: `masks` is (n, 1, *S) (or one (1, *S) mask for all) in {0, 1} on the data's grid."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import ControlNetDiffusionInferer
from monai.networks.utils import copy_model_state
from omegaconf import OmegaConf

from synth.errors import SynthError
from synth.models.base import build
from synth.models.diffusion import DiffusionModule

# the UNet's architecture keys a ControlNet shares (so that the encoder copy and the residuals fit)
SHARED = ("spatial_dims", "in_channels", "channels", "attention_levels", "num_res_blocks", "norm_num_groups", "norm_eps",
          "resblock_updown", "num_head_channels", "with_conditioning", "transformer_num_layers", "cross_attention_dim",
          "upcast_attention", "include_fc", "use_combined_linear", "use_flash_attention")


def _refuse_base(cfg) -> str | None:
    """Why a run cannot be a ControlNet's base, or None."""
    if cfg.model.get("family") != "diffusion" or cfg.model.get("autoencoder_run") is not None or cfg.model.get("base_run") is not None:
        return f"is a {cfg.model.get('name')} run: a ControlNet steers an image-space diffusion run (ddpm or rflow)"
    if int(cfg.model.get("num_classes") or 0) > 0:
        return "is class-conditional: train the base ddpm with model.num_classes=0 (the masks condition here)"
    return None


def load_base(run_dir: Any, image_shape: tuple[int, ...]):
    """The trained diffusion run under `run_dir` (best checkpoint, else last) and its config, checked against this data."""
    from synth.runs import load_frozen_run

    return load_frozen_run(run_dir, "model.base_run", image_shape, _refuse_base, kind="a ddpm or rflow run", noun="ddpm",
                           train_first="train a ddpm first (python train.py model=ddpm data.masks=true ...) and pass its dir")


class ControlNetModule(DiffusionModule):
    mask_conditioned = True

    def __init__(
        self,
        base_run: str,                  # run dir of a trained ddpm / rflow on the same data
        controlnet: Any,                # ControlNet config (the architecture keys come from the base UNet)
        conditioning_scale: float = 1.0,  # weight of the ControlNet's residuals at sampling
        ema_decay: float = 0.999,       # EMA of the ControlNet's weights (0: off)
        **kwargs: Any,
    ) -> None:
        image_shape = (int(kwargs["in_channels"]), *[int(s) for s in kwargs["image_size"]])
        base, base_cfg, run = load_base(base_run, image_shape)
        net = OmegaConf.to_container(base_cfg.model.net, resolve=True)
        scheduler = OmegaConf.to_container(base_cfg.model.scheduler, resolve=True)
        for key in ("samplers", "sampler", "sampling_steps", "eta"):  # null: the base run's sampling choices
            if kwargs.get(key) is None and base_cfg.model.get(key) is not None:
                kwargs[key] = OmegaConf.to_container(base_cfg.model[key]) if OmegaConf.is_config(base_cfg.model[key]) else base_cfg.model[key]
        super().__init__(net=net, scheduler=scheduler, ema_decay=0.0, **kwargs)
        if self.compile_mode != "none":
            raise SynthError(f"model.compile={kwargs.get('compile')} is not supported by model=controlnet (two networks per step): set model.compile=false")
        self.net.load_state_dict((base.ema.module if base.ema is not None else base.net).state_dict())
        self.net.requires_grad_(False).eval()
        cn = OmegaConf.to_container(controlnet, resolve=True) if OmegaConf.is_config(controlnet) else dict(controlnet)
        self.controlnet = build(cn, **{k: net[k] for k in SHARED if k in net}, conditioning_embedding_in_channels=1)
        copy_model_state(self.controlnet, self.net.state_dict())  # the encoder starts as the trained UNet's
        self.ema = self._averaged(ema_decay)
        self._inferer = ControlNetDiffusionInferer(self.scheduler)
        self.conditioning_scale = float(conditioning_scale)
        self.base_run = str(run)
        self.config_updates = {"model.base_run": str(run)}  # the saved config names it absolutely

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # frozen
        return self

    @property
    def trained(self) -> torch.nn.Module:
        return self.controlnet

    def check_training_labels(self) -> None:
        if not self.data_meta.get("masks"):
            raise SynthError("model=controlnet learns images from their masks: set data.masks=true (phantom, brats seg, a CSV Mask column, data.source.mask_dir)")

    # ----- training -----------------------------------------------------------------------------------------
    def _loss(self, batch: dict, drop_labels: bool, net=None) -> torch.Tensor:
        """The denoising objective through the frozen UNet with the ControlNet's (`net`, default: the trained one) residuals."""
        if "mask" not in batch:
            raise SynthError("model=controlnet got batches without masks: set data.masks=true")
        cn = self.controlnet if net is None else net
        x = batch["image"]
        noise = torch.randn_like(x)
        t = self._timesteps(x)
        pred = self._inferer(inputs=x, diffusion_model=self.net, controlnet=cn, noise=noise, timesteps=t, cn_cond=batch["mask"].to(x.dtype))
        return F.mse_loss(pred.float(), self._target(x, noise, t).float())

    # ----- sampling -----------------------------------------------------------------------------------------
    def _check_conditioning(self, condition: Any) -> None:
        self.condition_labels(condition, None)

    def condition_labels(self, condition: Any, n: int | None) -> torch.Tensor:
        """`condition` (masks (n, 1, *S), or one (1, *S) mask for all) -> float tensor (n, 1, *S) on the device."""
        spatial = list(self.image_shape[1:])
        if condition is None or isinstance(condition, (int, str)) or (isinstance(condition, (list, tuple)) and not len(condition)):
            raise SynthError(f"this {self.name} model draws images for given masks: pass masks (generate.py masks=<folder|file|train>), "
                             f"one per sample, of size {spatial}")
        m = torch.as_tensor(np.asarray(condition, dtype=np.float32) if not isinstance(condition, torch.Tensor) else condition).float()
        if m.ndim == len(spatial) + 1:
            m = m[None]
        if m.ndim != len(spatial) + 2 or m.shape[1] != 1 or list(m.shape[2:]) != spatial:
            raise SynthError(f"masks of shape {list(m.shape)} do not fit this model: give (n, 1, {', '.join(map(str, spatial))}) label maps on the data's grid")
        if n is not None and len(m) not in (1, n):
            raise SynthError(f"{len(m)} masks for {n} samples: give one mask, or exactly n")
        m = (m > 0).float()
        return (m.expand(n, *m.shape[1:]) if n is not None and len(m) == 1 else m).to(self.device)

    def _predict(self, net, x: torch.Tensor, t: torch.Tensor, masks: torch.Tensor | None, guidance: float) -> torch.Tensor:
        cn = self.controlnet if net is self.net else net  # denoise hands over the EMA ControlNet, or the frozen UNet (no EMA)
        down, mid = cn(x=x, timesteps=t, controlnet_cond=masks, conditioning_scale=self.conditioning_scale)
        return self.net(x, timesteps=t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
