"""Diffusion family: DDPM training of a MONAI DiffusionModelUNet; sampling with DDPM or DDIM, chosen at
sampling time. The denoising loop is written out below so it can be read."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build

_DDPM_ONLY = {"variance_type"}  # scheduler args only the ancestral (DDPM) sampler takes


class DiffusionModule(GenerativeModule):
    def __init__(
        self,
        net: Any,                 # DiffusionModelUNet config
        scheduler: Any,           # training noise scheduler config (DDPMScheduler)
        optimizer: Any,
        inferer: Any = None,      # DiffusionInferer config (built with the training scheduler)
        samplers: Any = None,     # {name: scheduler class path}: the sampling-time choices
        sampler: str = "ddim",    # default sampler at sampling time
        sampling_steps: int = 50, # default steps for the few-step sampler
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        self.net = build(net)
        self.scheduler_cfg = OmegaConf.to_container(scheduler, resolve=True) if OmegaConf.is_config(scheduler) else dict(scheduler)
        self.scheduler = instantiate(self.scheduler_cfg)
        self.inferer = instantiate(inferer or {"_target_": "monai.inferers.DiffusionInferer"}, scheduler=self.scheduler)
        self.samplers = dict(samplers or {"ddpm": "monai.networks.schedulers.DDPMScheduler"})
        self.default_sampler = sampler
        self.default_steps = int(sampling_steps)
        self.prediction_type = self.scheduler.prediction_type
        self.check_divisible(2 ** (len(net["channels"]) - 1), f"the UNet has {len(net['channels'])} levels")

    # ----- training ---------------------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (x.shape[0],), generator=generator, device=x.device)
        pred = self.inferer(inputs=x, diffusion_model=self.net, noise=noise, timesteps=t)
        if self.prediction_type == "epsilon":  # what the network learns to predict
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x, noise, t)
        else:  # "sample"
            target = x
        return F.mse_loss(pred.float(), target.float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # fixed noise and timesteps per batch: val/loss is comparable across epochs
        g = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        loss = self._loss(batch["image"], generator=g)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(20_000 + batch_idx)
        self.log("test/loss", self._loss(batch["image"], generator=g), sync_dist=True, batch_size=batch["image"].shape[0])

    # ----- sampling ---------------------------------------------------------------------------------------
    def sampling_scheduler(self, sampler: str | None = None, steps: int | None = None):
        """A scheduler of the requested kind with the training noise schedule, its timesteps set."""
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise SynthError(f"sampler={sampler} is not a sampler of this model: use one of {sorted(self.samplers)}")
        total = self.scheduler.num_train_timesteps
        steps = total if sampler == "ddpm" and steps is None else int(steps or self.default_steps)
        if not 1 <= steps <= total:
            raise SynthError(f"steps={steps} is out of range for a model trained with {total} timesteps: use 1..{total}")
        args = {k: v for k, v in self.scheduler_cfg.items() if k != "_target_"}
        if sampler != "ddpm":
            args = {k: v for k, v in args.items() if k not in _DDPM_ONLY}
        sched = get_class(self.samplers[sampler])(**args)
        sched.set_timesteps(steps, device=self.device)
        return sched

    def check_sampling(self, condition: Any = None, sampler: str | None = None, steps: int | None = None, **_: Any) -> None:
        super().check_sampling(condition)
        self.sampling_scheduler(sampler, steps)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: Any = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,   # ddpm | ddim
        steps: int | None = None,     # number of denoising steps
        progress: bool = True,
        **_: Any,
    ) -> torch.Tensor:
        self._check_conditioning(condition)
        sched = self.sampling_scheduler(sampler, steps)
        x = torch.randn((n, *self.image_shape), generator=generator, device=self._noise_device(generator)).to(self.device)
        step_gen = generator if generator is None or generator.device == self.device else None
        for t in tqdm(sched.timesteps, desc=f"{sampler or self.default_sampler} sampling", disable=not progress, leave=False):
            t_batch = torch.full((n,), int(t), device=self.device, dtype=torch.long)
            model_output = self.net(x, timesteps=t_batch)
            x, _ = sched.step(model_output, int(t), x, generator=step_gen)
        return x.clamp(-1, 1)
