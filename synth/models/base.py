"""What every family shares: image geometry, the `sample` contract, optimizers from config, shape checks, the
metadata (family, data geometry) that travels inside every checkpoint, and the set-level validation metric of
the families that sample in one pass (GAN, VAE, AE): `val/mmd_rbf` between samples and the validation images."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from synth.errors import SynthError
from synth.models.metrics import mmd, mmd_rbf

log = logging.getLogger(__name__)
VAL_SET_MAX = 256   # validation images compared with as many samples (one generator/decoder pass)
VAL_SET_SEED = 1234  # the samples' noise: the same at every validation, so the values compare over training


def build(cfg: Any, **overrides: Any) -> Any:
    """Instantiate a network config as plain Python values; MONAI wants `(name, {args})` layer specs as tuples."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for key in ("act", "norm", "dropout"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    target = get_class(cfg.pop("_target_"))
    return target(**{**cfg, **overrides})


SAMPLER_KEYS = ("sampler", "steps", "guidance", "eta")  # what generate.py / evaluate.py may pass to sample()


def warmed_decay(decay: float, n: int | float) -> float:
    """The EMA decay at update `n`: grows as (1+n)/(10+n) up to `decay`, so short runs are not stuck near init
    (the diffusion families' EMA and StyleGAN2's G_ema)."""
    return min(float(decay), (1.0 + float(n)) / (10.0 + float(n)))


def _no_closure() -> None:
    """Manual optimization ran backward already: the optimizer step's closure has nothing left to do."""


class GenerativeModule(L.LightningModule):
    """Base of the families. Subclasses build their networks from config and implement the steps and `sample`."""

    family: str = "generative"
    can_sample: bool = True  # False: generates only through another model (a VQ-VAE through latent diffusion)
    mask_conditioned: bool = False  # True: sample(n, condition=masks) draws images for given masks (controlnet)

    def __init__(
        self,
        *,
        name: str,                   # the model config's name (ddpm, vae, ...)
        family: str,                 # autoencoder | gan | diffusion (recorded in checkpoints)
        monitor: str,                # metric the best checkpoint is chosen by
        monitor_mode: str,           # min | max
        spatial_dims: int,           # 2 or 3
        in_channels: int,            # image channels
        image_size: Sequence[int],   # spatial shape the data module delivers
        optimizer: Any,              # partial optimizer config (_partial_: true)
        num_classes: int = 0,        # >0: conditional on a class label from the data (0 .. num_classes-1)
    ) -> None:
        super().__init__()
        if len(image_size) != spatial_dims:
            raise SynthError(
                f"data.image_size={list(image_size)} has {len(image_size)} numbers but data.spatial_dims={spatial_dims}: "
                f"give {spatial_dims} sizes, e.g. data.image_size=[{','.join(['64'] * spatial_dims)}]"
            )
        self.name = name
        self.family = family
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.spatial_dims = int(spatial_dims)
        self.image_shape = (int(in_channels), *[int(s) for s in image_size])
        self.optimizer_cfg = optimizer
        self.num_classes = int(num_classes)
        self.data_meta: dict = {}  # filled by the train task from the data module; saved in checkpoints
        self._val_real: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._warned_small_val = False

    # ----- the contract ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, generator: torch.Generator | None = None, **sampler) -> torch.Tensor:
        """Return `n` images `(n, C, *S)` in [-1, 1]."""
        raise NotImplementedError

    def sampling_settings(self, **sampler: Any) -> dict | None:
        """The sampler a request resolves to, defaults filled in (samples.json records it); None for families that
        draw in one pass without sampler settings (GAN, autoencoders). Diffusion overrides it."""
        return None

    def check_sampling(self, condition: Any = None, **sampler) -> None:
        """Refuse a sampling request before any work starts (generate.py calls this first). Families that draw in
        one pass (GAN, autoencoders) take no sampler settings: a request for one is refused, never ignored."""
        self._check_conditioning(condition)
        given = {k: v for k, v in sampler.items() if k in SAMPLER_KEYS and v is not None}
        if given:
            asked = " ".join(f"{k}={v}" for k, v in given.items())
            raise SynthError(f"{asked}: a {self.name} model ({self.family}) draws each sample in one pass and takes no sampler "
                             "settings; drop them (they apply to diffusion models)")

    def check_divisible(self, factor: int, what: str, shape: Sequence[int] | None = None) -> None:
        """Fail before training when the image (or latent) cannot pass through `factor`-fold downsampling."""
        spatial = list((shape or self.image_shape)[1:])
        if any(s % factor for s in spatial):
            if shape is not None:
                raise SynthError(f"the latent size {spatial} is not divisible by {factor} ({what}): use fewer UNet levels (model.net.channels)")
            ok = [max(factor, round(s / factor) * factor) for s in spatial]
            raise SynthError(f"image size {spatial} is not divisible by {factor} ({what}): set data.image_size={ok} or use fewer levels")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _check_conditioning(self, condition: Any) -> None:
        if condition is not None and not self.conditional:
            raise SynthError(f"this {self.name} model is unconditional: drop condition= (or train one with model.num_classes=K)")
        if self.conditional:
            self.condition_labels(condition, len(condition) if isinstance(condition, (list, tuple)) else 1)

    def condition_labels(self, condition: Any, n: int) -> torch.Tensor | None:
        """`condition` (a class index, a class name, or a list of n of them) -> LongTensor (n,) on the device."""
        if not self.conditional:
            return None
        names = list(self.data_meta.get("class_names") or [])
        valid = f"0..{self.num_classes - 1}" + (f" or one of {names}" if names else "")
        if condition is None:
            raise SynthError(f"this {self.name} model is conditional on {self.num_classes} classes: pass condition=<{valid}> (or a list, one per sample)")
        items = list(condition) if isinstance(condition, (list, tuple)) else [condition] * n
        if len(items) != n:
            raise SynthError(f"condition lists {len(items)} labels for {n} samples: give one label, or exactly n")
        labels = []
        for c in items:
            if isinstance(c, str) and c in names:
                c = names.index(c)
            try:
                c = int(c)
            except (TypeError, ValueError):
                c = -1
            if not 0 <= c < self.num_classes:
                raise SynthError(f"condition={items[len(labels)]} is not a class of this model: use {valid}")
            labels.append(c)
        return torch.tensor(labels, dtype=torch.long, device=self.device)

    def check_training_labels(self) -> None:
        """A conditional model needs labelled data with as many classes (called by the train task)."""
        have = int(self.data_meta.get("num_classes", 0))
        if self.conditional and have != self.num_classes:
            raise SynthError(
                f"model.num_classes={self.num_classes} but the data has {have} label classes: "
                + (f"set model.num_classes={have}" if have else "use data with labels (CSV Label column, phantom, brats) or model.num_classes=0")
            )

    def _noise_device(self, generator: torch.Generator | None) -> torch.device:
        return generator.device if generator is not None else self.device

    def require_unused_parameters_under_ddp(self, what: str) -> None:
        """Adversarial models step two networks in separate backward passes, each leaving the other's
        parameters unused, which DDP allows only with find_unused_parameters."""
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer.strategy.model  # the strategy wraps the module before on_fit_start
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters:
            raise SynthError(
                f"{what} updates two networks in separate backward passes, which DDP allows only with find_unused_parameters: "
                "add strategy=ddp_find_unused"
            )

    # ----- the set-level validation metric (GAN, VAE, AE) ---------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_real = []

    def collect_val_images(self, batch: dict) -> None:
        """Keep a validation batch for `log_sample_set_metrics` (call from validation_step)."""
        if sum(len(x) for x, _ in self._val_real) < VAL_SET_MAX:
            self._val_real.append((batch["image"], batch.get("label")))

    def log_sample_set_metrics(self, required: bool = True):
        """Log `val/mmd_rbf` (the monitor of the GAN and the sweep objective of GAN, VAE, AE: unbiased RBF-kernel
        MMD on pixels, which sees mode collapse) and `val/mmd` (linear kernel: the mean images only) between up to
        VAL_SET_MAX validation images (gathered from every rank) and as many samples drawn with a fixed seed
        (with the validation images' labels when conditional). Returns (real, labels, fake), or None when the
        validation set is too small (`required`: refused; else one warning per run and nothing logged)."""
        if not self._val_real:
            return None
        real = torch.cat([x for x, _ in self._val_real])
        labels = torch.cat([y for _, y in self._val_real]) if self.conditional else None
        self._val_real = []
        if self.trainer.world_size > 1:  # each rank holds a shard: compare the whole validation set on every rank
            real = self.all_gather(real).flatten(0, 1)
            labels = self.all_gather(labels).flatten(0, 1) if labels is not None else None
        real, labels = real[:VAL_SET_MAX], (labels[:VAL_SET_MAX] if labels is not None else None)
        if len(real) < 2:
            why = f"val/mmd_rbf compares sets of images but validation holds {len(real)}: add subjects or raise the val fraction of data.split"
            if required:
                raise SynthError(why)
            if not self._warned_small_val:
                self._warned_small_val = True
                log.warning(why + " (not logged this run)")
            return None
        g = torch.Generator(device=self.device).manual_seed(VAL_SET_SEED)
        fake = self.sample(len(real), condition=None if labels is None else labels.tolist(), generator=g, progress=False)
        self.log("val/mmd_rbf", mmd_rbf(fake, real), prog_bar=True)  # the same on every rank: no sync needed
        self.log("val/mmd", mmd(real, fake))
        return real, labels, fake

    # ----- optimizers and checkpoints ----------------------------------------------------------------------
    def manual_step(self, opt, loss: torch.Tensor, grad_clip: float | None, count: bool = True) -> None:
        """Backward, clip, step (manual optimization). `count=False` keeps trainer.global_step where it is, so
        that a step of an adversarial model (generator + discriminator updates) is one step: max_steps and
        val_check_interval then mean training batches for every family."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if grad_clip:
            self.clip_gradients(opt, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
        if count:
            opt.step()
            return
        # the strategy's step (precision plugin and gradient scaler included) without the LightningOptimizer wrapper
        # around it, which is what counts trainer.global_step
        self.trainer.strategy.optimizer_step(opt.optimizer, closure=_no_closure)

    def build_optimizer(self, cfg: Any, params) -> torch.optim.Optimizer:
        return instantiate(cfg)(params=params)

    def configure_optimizers(self):
        return self.build_optimizer(self.optimizer_cfg, self.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["synth"] = {
            "family": self.family,
            "model": self.name,
            "image_shape": list(self.image_shape),
            "data_meta": self.data_meta,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_meta = checkpoint.get("synth", {}).get("data_meta", self.data_meta)

    @property
    def n_parameters(self) -> int:
        """Trained parameters (not EMA copies or frozen parts)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
