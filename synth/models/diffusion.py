"""Diffusion family: a MONAI DiffusionModelUNet trained as DDPM (epsilon / v / sample prediction) or as a
rectified flow (RFlowScheduler), with EMA weights for sampling and classifier-free guidance when conditioned.
Samplers (DDPM, DDIM, RFlow) are a sampling-time choice; the denoising loop is written out below."""
from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from synth.errors import SynthError
from synth.models.base import GenerativeModule, build
from synth.models.speed import checkpoint_unet_blocks, compile_mode, memory_format, to_channels_last



def _own_args(cls) -> set[str]:
    """The arguments a scheduler class names itself (the rest are schedule arguments such as beta_start)."""
    return {k for k, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}


def ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float) -> torch.Tensor:
    """EMA with warm-up (decay grows as (1+n)/(10+n) up to `decay`), so short runs are not stuck near init."""
    d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
    return averaged + (current - averaged) * (1.0 - d)


class DiffusionModule(GenerativeModule):
    def __init__(
        self,
        net: Any,                     # DiffusionModelUNet config
        scheduler: Any,               # training noise scheduler config (DDPMScheduler or RFlowScheduler)
        optimizer: Any,
        samplers: Any = None,         # {name: scheduler class path}: the sampling-time choices
        sampler: str = "ddim",        # default sampler
        sampling_steps: int = 50,     # default steps of the few-step samplers
        ema_decay: float = 0.999,     # 0: no EMA; else sampling uses the EMA weights
        cond_drop_prob: float = 0.1,  # conditional: label dropped to "null" this often (classifier-free guidance)
        guidance: float = 3.0,        # conditional: default guidance scale at sampling (1: no guidance)
        sample_shape: Sequence[int] | None = None,  # what the UNet denoises (latent diffusion: the latent shape)
        compile: Any = False,         # torch.compile the UNet: false | sample | train | true (both)
        channels_last: bool = False,  # channels-last memory format (helps on GPUs with tensor cores)
        gradient_checkpointing: bool = False,  # recompute UNet block activations in backward (3D memory)
        **common,
    ) -> None:
        super().__init__(optimizer=optimizer, **common)
        self.sample_shape = tuple(int(s) for s in (sample_shape or self.image_shape))
        extra = {"num_class_embeds": self.num_classes + 1} if self.conditional else {}  # last index = "no label"
        self.net = build(net, **extra)
        # ----- speed options (synth/models/speed.py); before the EMA copy so that it shares them
        self.compile_mode = compile_mode(compile)
        self.channels_last = bool(channels_last)
        if gradient_checkpointing:
            checkpoint_unet_blocks(self.net)
        if self.channels_last:
            to_channels_last(self.net, self.spatial_dims)
        self._compiled: dict = {}  # sampling networks compiled by torch.compile (outside the module tree)
        self.scheduler_cfg = OmegaConf.to_container(scheduler, resolve=True) if OmegaConf.is_config(scheduler) else dict(scheduler)
        # kept outside the module tree: schedulers hold no trained state (and RFlowScheduler is not a full nn.Module)
        self._train_scheduler = {"scheduler": instantiate(self.scheduler_cfg)}
        self.flow = isinstance(self.scheduler, RFlowScheduler)
        self.prediction_type = "flow" if self.flow else self.scheduler.prediction_type
        self.samplers = dict(samplers or {"ddpm": "monai.networks.schedulers.DDPMScheduler"})
        self.default_sampler = sampler
        self.default_steps = int(sampling_steps)
        self.cond_drop_prob = float(cond_drop_prob)
        self.guidance = float(guidance)
        self.ema = None
        if ema_decay > 0:
            self.ema = AveragedModel(self.net, avg_fn=partial(ema_update, decay=float(ema_decay)), use_buffers=True)
            self.ema.requires_grad_(False)
        levels = len(net["channels"])
        latent = self.sample_shape != self.image_shape  # latent diffusion: the UNet sees the latent, not the image
        self.check_divisible(2 ** (levels - 1), f"the UNet has {levels} levels", shape=self.sample_shape if latent else None)
        total = self.scheduler.num_train_timesteps
        if self.default_sampler not in self.samplers:
            raise SynthError(f"model.sampler={sampler} is not in model.samplers: use one of {sorted(self.samplers)}")
        if not 1 <= self.default_steps <= total:
            raise SynthError(f"model.sampling_steps={self.default_steps} is out of range for model.scheduler.num_train_timesteps={total}: use 1..{total}")

    @property
    def scheduler(self):
        """The training noise scheduler."""
        return self._train_scheduler["scheduler"]

    # ----- encoding hooks (latent diffusion overrides them) ------------------------------------------------
    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # ----- speed options --------------------------------------------------------------------------------------
    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=memory_format(self.spatial_dims)) if self.channels_last else x

    def on_train_start(self) -> None:  # (latent diffusion has its own on_fit_start)
        if self.compile_mode in ("train", "all"):
            self.net.compile()  # in place: parameters and state_dict keys unchanged

    def _sampling_net(self, net):
        if self.compile_mode not in ("sample", "all") or getattr(net, "_compiled_call_impl", None) is not None:
            return net
        if id(net) not in self._compiled:
            self._compiled[id(net)] = torch.compile(net)
        return self._compiled[id(net)]

    def from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        return z

    # ----- training ---------------------------------------------------------------------------------------
    def _labels(self, batch: dict, drop: bool) -> torch.Tensor | None:
        if not self.conditional:
            return None
        labels = batch["label"].clone()
        if drop and self.cond_drop_prob > 0:
            labels[torch.rand(labels.shape, device=labels.device) < self.cond_drop_prob] = self.num_classes
        return labels

    def _loss(self, batch: dict, drop_labels: bool) -> torch.Tensor:
        x = self._fmt(self.to_diffusion_space(batch["image"]))
        noise = torch.randn_like(x)
        if self.flow:
            t = self.scheduler.sample_timesteps(x)
        else:
            t = torch.randint(0, self.scheduler.num_train_timesteps, (x.shape[0],), device=x.device)
        noisy = self.scheduler.add_noise(original_samples=x, noise=noise, timesteps=t)
        pred = self.net(noisy, timesteps=t, class_labels=self._labels(batch, drop_labels))
        if self.prediction_type == "epsilon":  # what the network learns to predict
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x, noise, t)
        elif self.prediction_type == "flow":  # rectified flow: the velocity from noise to data
            target = x - noise
        else:  # "sample"
            target = x
        return F.mse_loss(pred.float(), target.float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, drop_labels=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def _eval_loss(self, batch: dict, seed: int) -> torch.Tensor:
        """Noise and timesteps fixed by seed: the metric is comparable across validations."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._loss(batch, drop_labels=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._eval_loss(batch, 10_000 + batch_idx)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.log("test/loss", self._eval_loss(batch, 20_000 + batch_idx), sync_dist=True, batch_size=batch["image"].shape[0])

    def configure_optimizers(self):
        return self.build_optimizer(self.optimizer_cfg, self.net.parameters())

    # ----- sampling ---------------------------------------------------------------------------------------
    def sampling_scheduler(self, sampler: str | None = None, steps: int | None = None):
        """A scheduler of the requested kind with the training noise schedule, its timesteps set."""
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise SynthError(f"sampler={sampler} is not a sampler of this model: use one of {sorted(self.samplers)}")
        cls = get_class(self.samplers[sampler])
        total = self.scheduler.num_train_timesteps
        ancestral = cls is DDPMScheduler  # walks every training timestep unless told otherwise
        steps = total if ancestral and steps is None else int(steps or self.default_steps)
        if not 1 <= steps <= total:
            raise SynthError(f"steps={steps} is out of range for a model trained with {total} timesteps: use 1..{total}")
        # the training scheduler's settings, less those only its own class takes (e.g. DDPM's variance_type for DDIM)
        foreign = _own_args(type(self.scheduler)) - _own_args(cls)
        sched = cls(**{k: v for k, v in self.scheduler_cfg.items() if k != "_target_" and k not in foreign})
        if isinstance(sched, RFlowScheduler):
            sched.set_timesteps(steps, device=self.device, input_img_size_numel=int(torch.tensor(self.sample_shape[1:]).prod()))
        else:
            sched.set_timesteps(steps, device=self.device)
        return sched

    def check_sampling(self, condition: Any = None, sampler: str | None = None, steps: int | None = None, **_: Any) -> None:
        super().check_sampling(condition)
        self.sampling_scheduler(sampler, steps)

    def _predict(self, net, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        if labels is None:
            return net(x, timesteps=t)
        if guidance == 1.0:
            return net(x, timesteps=t, class_labels=labels)
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = net(torch.cat([x, x]), timesteps=torch.cat([t, t]), class_labels=torch.cat([labels, null])).chunk(2)
        return uncond + guidance * (cond - uncond)  # classifier-free guidance

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: Any = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,    # ddpm | ddim | rflow (what the model config offers)
        steps: int | None = None,      # number of denoising steps
        guidance: float | None = None, # classifier-free guidance scale (conditional models)
        use_ema: bool = True,          # the EMA weights when the model keeps them
        progress: bool = True,
        **_: Any,
    ) -> torch.Tensor:
        self._check_conditioning(condition)
        labels = self.condition_labels(condition, n)
        guidance = self.guidance if guidance is None else float(guidance)
        net = self._sampling_net(self.ema.module if use_ema and self.ema is not None else self.net)
        sched = self.sampling_scheduler(sampler, steps)
        x = self._fmt(torch.randn((n, *self.sample_shape), generator=generator, device=self._noise_device(generator)).to(self.device))
        step_gen = generator if generator is not None and generator.device == self.device else None
        timesteps = list(sched.timesteps)
        for i, t in enumerate(tqdm(timesteps, desc=f"{sampler or self.default_sampler} sampling", disable=not progress, leave=False)):
            t_batch = torch.full((n,), int(t), device=self.device, dtype=torch.long)
            model_output = self._predict(net, x, t_batch, labels, guidance)
            if self.flow:
                t_next = int(timesteps[i + 1]) if i + 1 < len(timesteps) else 0
                x, _ = sched.step(model_output, int(t), x, t_next)
            else:
                x, _ = sched.step(model_output, int(t), x, generator=step_gen)
        return self.from_diffusion_space(x).clamp(-1, 1)
