"""Diffusion family: a MONAI DiffusionModelUNet trained as DDPM (epsilon / v / sample prediction) or as a
rectified flow (RFlowScheduler), with EMA weights (updated once per optimizer step) for sampling and validation,
and classifier-free guidance when conditioned. Samplers (DDPM, DDIM, RFlow) are a sampling-time choice; the
denoising loop is written out below, its DDPM/DDIM step in synth/models/samplers.py (the real previous timestep)."""
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
from synth.models.base import GenerativeModule, build, warmed_decay
from synth.models.samplers import strided_step
from synth.models.speed import checkpoint_unet_blocks, compile_mode, memory_format, to_channels_last



def _own_args(cls) -> set[str]:
    """The arguments a scheduler class names itself (the rest are schedule arguments such as beta_start)."""
    return {k for k, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}


def ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float) -> torch.Tensor:
    """EMA with warm-up (`warmed_decay`), for torch's AveragedModel."""
    return averaged + (current - averaged) * (1.0 - warmed_decay(decay, num_averaged))


class DiffusionModule(GenerativeModule):
    def __init__(
        self,
        net: Any,                     # DiffusionModelUNet config
        scheduler: Any,               # training noise scheduler config (DDPMScheduler or RFlowScheduler)
        optimizer: Any,
        samplers: Any = None,         # {name: scheduler class path}: the sampling-time choices
        sampler: str = "ddim",        # default sampler
        sampling_steps: int = 50,     # default steps of the few-step samplers
        eta: float = 0.0,             # default DDIM noise: 0 deterministic .. 1 ancestral (ddpm is always 1)
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
        self.default_eta = float(eta)
        self.cond_drop_prob = float(cond_drop_prob)
        self.guidance = float(guidance)
        self.ema = self._averaged(ema_decay)
        levels = len(net["channels"])
        latent = self.sample_shape != self.image_shape  # latent diffusion: the UNet sees the latent, not the image
        self.check_divisible(2 ** (levels - 1), f"the UNet has {levels} levels", shape=self.sample_shape if latent else None)
        total = self.scheduler.num_train_timesteps
        if self.default_sampler not in self.samplers:
            raise SynthError(f"model.sampler={sampler} is not in model.samplers: use one of {sorted(self.samplers)}")
        if not 1 <= self.default_steps <= total:
            raise SynthError(f"model.sampling_steps={self.default_steps} is out of range for model.scheduler.num_train_timesteps={total}: use 1..{total}")
        if not 0 <= self.default_eta <= 1:
            raise SynthError(f"model.eta={eta} is out of range: use 0 (deterministic DDIM) .. 1 (ancestral)")
        self._ema_step = -1  # the optimizer step the EMA last followed

    @property
    def trained(self) -> torch.nn.Module:
        """The network the optimizer trains and the EMA follows (model=controlnet: its ControlNet; the UNet is frozen)."""
        return self.net

    def _averaged(self, decay: float) -> AveragedModel | None:
        """The EMA of `trained` (None for decay 0), updated once per optimizer step."""
        if decay <= 0:
            return None
        return AveragedModel(self.trained, avg_fn=partial(ema_update, decay=float(decay)), use_buffers=True).requires_grad_(False)

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
        self._ema_step = self.trainer.global_step  # resumed: the EMA already holds the restored step
        if self.compile_mode in ("train", "all"):
            self.net.compile()  # in place: parameters and state_dict keys unchanged
            self._compiled[id(self.net)] = self.net  # already compiled: sampling uses it as is

    def _sampling_net(self, net):
        if self.compile_mode not in ("sample", "all"):
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

    def _loss(self, batch: dict, drop_labels: bool, net=None) -> torch.Tensor:
        """The training objective of `net` (default: the trained network) on one batch."""
        net = self.net if net is None else net
        x = self._fmt(self.to_diffusion_space(batch["image"]))
        noise = torch.randn_like(x)
        t = self._timesteps(x)
        noisy = self.scheduler.add_noise(original_samples=x, noise=noise, timesteps=t)
        pred = net(noisy, timesteps=t, class_labels=self._labels(batch, drop_labels))
        return F.mse_loss(pred.float(), self._target(x, noise, t).float())

    def _timesteps(self, x: torch.Tensor) -> torch.Tensor:
        """Training timesteps, one per item."""
        if self.flow:
            return self.scheduler.sample_timesteps(x)
        return torch.randint(0, self.scheduler.num_train_timesteps, (x.shape[0],), device=x.device)

    def _target(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict for clean `x` noised with `noise` at `t`."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x, noise, t)
        if self.prediction_type == "flow":  # rectified flow: the velocity from noise to data
            return x - noise
        return x  # "sample"

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, drop_labels=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """One EMA update per optimizer step: under gradient accumulation several micro-batches end before
        global_step moves (a resumed run starts from the restored step, set in on_train_start)."""
        if self.ema is not None and self.trainer.global_step != self._ema_step:
            self._ema_step = self.trainer.global_step
            self.ema.update_parameters(self.trained)

    def _eval_loss(self, batch: dict, seed: int, net=None) -> torch.Tensor:
        """Noise and timesteps fixed by seed: the metric is comparable across validations and networks."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._loss(batch, drop_labels=False, net=net)

    def _eval_step(self, batch: dict, prefix: str, seed: int) -> None:
        """`<prefix>/loss`: the loss of the network that samples (the EMA weights when kept; the monitor);
        `<prefix>/loss_raw`: the trained network's, on the same noise and timesteps."""
        bs = batch["image"].shape[0]
        raw = self._eval_loss(batch, seed)
        loss = raw if self.ema is None else self._eval_loss(batch, seed, net=self.ema.module)
        self.log(f"{prefix}/loss", loss, prog_bar=prefix == "val", sync_dist=True, batch_size=bs)
        self.log(f"{prefix}/loss_raw", raw, sync_dist=True, batch_size=bs)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", 10_000 + batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", 20_000 + batch_idx)

    def configure_optimizers(self):
        return self.build_optimizer(self.optimizer_cfg, self.trained.parameters())

    # ----- sampling ---------------------------------------------------------------------------------------
    def sampling_settings(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                          eta: float | None = None, use_ema: bool = True, **_: Any) -> dict:
        """The sampler a request resolves to, every default filled in (samples.json records this), or a one-line
        SynthError: name, steps, eta (DDIM noise; ddpm: 1, ancestral; rflow: none), guidance (conditional
        models), ema (whether the EMA weights sample)."""
        name = sampler or self.default_sampler
        if name not in self.samplers:
            raise SynthError(f"sampler={name} is not a sampler of this model: use one of {sorted(self.samplers)}")
        cls = get_class(self.samplers[name])
        total = self.scheduler.num_train_timesteps
        ancestral = issubclass(cls, DDPMScheduler)  # walks every training timestep unless told otherwise
        steps = (total if ancestral else self.default_steps) if steps is None else int(steps)
        if not 1 <= steps <= total:
            raise SynthError(f"steps={steps} is out of range for a model trained with {total} timesteps: use 1..{total}")
        if issubclass(cls, RFlowScheduler):
            if eta is not None:
                raise SynthError(f"eta={eta} is a DDIM setting: the {name} sampler takes none (drop eta=)")
        elif ancestral:
            if eta is not None and float(eta) != 1.0:
                raise SynthError(f"eta={eta} with sampler={name}: ancestral sampling is eta=1; for another eta use a DDIM sampler")
            eta = 1.0
        else:
            eta = self.default_eta if eta is None else float(eta)
            if not 0 <= eta <= 1:
                raise SynthError(f"eta={eta} is out of range: use 0 (deterministic DDIM) .. 1 (ancestral)")
        guidance = (self.guidance if guidance is None else float(guidance)) if self.conditional else None
        return {"name": name, "steps": steps, "eta": eta, "guidance": guidance, "ema": bool(use_ema and self.ema is not None)}

    def sampling_scheduler(self, sampler: str | None = None, steps: int | None = None):
        """A scheduler of the requested kind with the training noise schedule, its timesteps set."""
        settings = self.sampling_settings(sampler, steps)
        cls = get_class(self.samplers[settings["name"]])
        # the training scheduler's settings, less those only its own class takes (e.g. DDPM's variance_type for DDIM)
        foreign = _own_args(type(self.scheduler)) - _own_args(cls)
        sched = cls(**{k: v for k, v in self.scheduler_cfg.items() if k != "_target_" and k not in foreign})
        if isinstance(sched, RFlowScheduler):
            sched.set_timesteps(settings["steps"], device=self.device, input_img_size_numel=int(torch.tensor(self.sample_shape[1:]).prod()))
        else:
            sched.set_timesteps(settings["steps"], device=self.device)
        return sched

    def check_sampling(self, condition: Any = None, **sampler: Any) -> None:
        self._check_conditioning(condition)
        if sampler.get("guidance") is not None and not self.conditional:
            raise SynthError(f"guidance={sampler['guidance']} steers a conditional model toward its class: this {self.name} model is "
                             "unconditional; drop guidance= (or train one with model.num_classes=K)")
        self.sampling_settings(**sampler)

    def _predict(self, net, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        if labels is None:
            return net(x, timesteps=t)
        if guidance == 1.0:
            return net(x, timesteps=t, class_labels=labels)
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = net(torch.cat([x, x]), timesteps=torch.cat([t, t]), class_labels=torch.cat([labels, null])).chunk(2)
        return uncond + guidance * (cond - uncond)  # classifier-free guidance

    @torch.no_grad()
    def denoise(
        self,
        n: int,
        condition: Any = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,    # ddpm | ddim | rflow (what the model config offers)
        steps: int | None = None,      # number of denoising steps
        guidance: float | None = None, # classifier-free guidance scale (conditional models)
        eta: float | None = None,      # DDIM noise (0: deterministic; 1: ancestral)
        use_ema: bool = True,          # the EMA weights when the model keeps them
        progress: bool = True,
        **_: Any,
    ) -> torch.Tensor:
        """The sampling chain in diffusion space: `n` samples of `sample_shape` (latents for latent diffusion),
        neither decoded nor clamped."""
        self._check_conditioning(condition)
        labels = self.condition_labels(condition, n)
        settings = self.sampling_settings(sampler, steps, guidance, eta, use_ema)
        net = self._sampling_net(self.ema.module if settings["ema"] else self.net)
        sched = self.sampling_scheduler(settings["name"], settings["steps"])
        x = self._fmt(torch.randn((n, *self.sample_shape), generator=generator, device=self._noise_device(generator)).to(self.device))
        step_gen = generator if generator is not None and generator.device == self.device else None
        timesteps = [int(t) for t in sched.timesteps]
        full_ddpm = isinstance(sched, DDPMScheduler) and len(timesteps) == self.scheduler.num_train_timesteps
        steps_bar = tqdm(timesteps, desc=f"{settings['name']} {len(timesteps)} steps", unit="step", leave=False,
                         disable=None if progress else True)  # None: shown on a terminal, not in log files
        for i, t in enumerate(steps_bar):
            t_batch = torch.full((n,), t, device=self.device, dtype=torch.long)
            model_output = self._predict(net, x, t_batch, labels, 1.0 if settings["guidance"] is None else settings["guidance"])
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
            if self.flow:
                x, _ = sched.step(model_output, t, x, t_next or 0)
            elif full_ddpm:  # every timestep: MONAI's own ancestral step (its previous timestep, t - 1, is right)
                x, _ = sched.step(model_output, t, x, generator=step_gen)
            else:  # DDIM, or DDPM on a strided schedule: the step to the schedule's real next timestep
                x, _ = strided_step(sched, model_output, t, -1 if t_next is None else t_next, x, eta=settings["eta"], generator=step_gen)
        return x

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **sampler: Any) -> torch.Tensor:
        """`n` images in [-1, 1]: the chain of `denoise` (same arguments), decoded and clamped."""
        return self.from_diffusion_space(self.denoise(n, condition, generator, **sampler)).clamp(-1, 1)
