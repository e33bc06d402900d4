"""StyleGAN2 (Karras et al. 2020), 2D or 3D. Generator: a mapping MLP (z, plus a class embedding when conditional,
-> w; lr multiplier), a learned 4-voxel constant grown by doubling, modulated/demodulated convolutions (one grouped
F.conv2d/conv3d per layer), per-layer noise with a learned strength, image skip outputs summed across levels, style
mixing in training and truncation towards the tracked mean w at sampling. Discriminator: residual blocks, minibatch
standard deviation, a projection term for the class. Equalised learning rate everywhere. Loss: non-saturating
logistic with lazy R1 (every k steps, scaled by k) and optional lazy path-length regularisation. The EMA generator
samples (validation, grids, generate); checkpoints hold both. Same contracts as the GAN family (synth/models/gan.py):
manual optimisation where a step is one batch, val/mmd_rbf as monitor, the collapse watch, DDP with find_unused."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synth.errors import SynthError
from synth.models.base import GenerativeModule
from synth.models.collapse import CollapseWatch
from synth.models.gan import d_loss_fn, g_loss_fn

GAIN = math.sqrt(2)  # leaky ReLU gain: keeps activations at unit variance


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * GAIN


def resample(x: torch.Tensor, up: bool) -> torch.Tensor:
    """x2 (bi/trilinear) or /2 (average pooling) on every spatial axis."""
    if up:
        return F.interpolate(x, scale_factor=2, mode=("bilinear", "trilinear")[x.ndim - 4], align_corners=False)
    return (F.avg_pool2d, F.avg_pool3d)[x.ndim - 4](x, 2)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()


class EqualLinear(nn.Module):
    """Equalised learning rate: N(0, 1) weights scaled by lr_mul / sqrt(fan_in) at run time."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), bias_init / lr_mul))
        self.gain, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.gain, self.bias * self.lr_mul)
        return lrelu(x) if self.act else x


class EqualConv(nn.Module):
    """Discriminator convolution with equalised learning rate ('same' padding)."""

    def __init__(self, dims: int, cin: int, cout: int, k: int, bias: bool = True, act: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, *[k] * dims))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain, self.act, self.conv = 1 / math.sqrt(cin * k**dims), act, (F.conv2d, F.conv3d)[dims - 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.act else x


class ModulatedConv(nn.Module):
    """The style scales the input channels of the weight per sample; demodulation rescales each output channel's
    weight to unit norm, so unit-variance inputs give unit-variance outputs. One grouped convolution for the batch.
    Synthesis layers add noise, bias and the activation; image outputs (1x1, no demodulation) add a bias."""

    def __init__(self, dims: int, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True,
                 up: bool = False, noise: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, *[k] * dims))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)  # style; starts at 1
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
        self.dims, self.gain, self.demodulate, self.up = dims, 1 / math.sqrt(cin * k**dims), demodulate, up

    def modulated(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        ones = [1] * (self.dims + 1)
        weight = self.weight[None] * self.gain * self.affine(w).view(b, 1, cin, *ones[1:])  # (B, out, in, *k)
        if self.demodulate:
            weight = weight * (weight.square().flatten(2).sum(2) + 1e-8).rsqrt().view(b, -1, *ones)
        if self.up:
            x = resample(x, up=True)
        conv = (F.conv2d, F.conv3d)[self.dims - 2]
        out = conv(x.reshape(1, -1, *x.shape[2:]), weight.flatten(0, 1), padding=self.weight.shape[-1] // 2, groups=b)
        return out.view(b, -1, *out.shape[2:])

    def forward(self, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
        x = self.modulated(x, w)
        if self.noise_strength is None:  # an image output
            return x + self.bias.view(1, -1, *[1] * self.dims)
        if noise:
            where = generator.device if generator is not None else x.device
            x = x + self.noise_strength * torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator, device=where).to(x)
        return lrelu(x + self.bias.view(1, -1, *[1] * self.dims))


class Generator(nn.Module):
    def __init__(self, dims: int, img_channels: int, channels: list[int], z_dim: int, w_dim: int, mapping_layers: int,
                 lr_mul: float, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        dim_in = z_dim + (embed_dim if num_classes else 0)
        self.mapping = nn.Sequential(*[EqualLinear(dim_in if i == 0 else w_dim, w_dim, lr_mul=lr_mul, act=True)
                                       for i in range(mapping_layers)])
        self.register_buffer("w_avg", torch.zeros(w_dim))  # tracked in training: the centre truncation pulls towards
        self.const = nn.Parameter(torch.randn(channels[0], *[4] * dims))
        self.convs, self.to_img = nn.ModuleList(), nn.ModuleList()
        for level, ch in enumerate(channels):
            if level:
                self.convs.append(ModulatedConv(dims, channels[level - 1], ch, 3, w_dim, up=True))
            self.convs.append(ModulatedConv(dims, ch, ch, 3, w_dim))
            self.to_img.append(ModulatedConv(dims, ch, img_channels, 1, w_dim, demodulate=False, noise=False))
        self.num_ws = 2 * len(channels)  # synthesis layer j takes ws[:, j]; level k's image output shares ws[:, 2k+1]

    def map(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize(z)
        if self.embed is not None:  # conditional: the class embedding beside z
            x = torch.cat([x, normalize(self.embed(labels))], dim=1)
        return self.mapping(x)

    def ws(self, z: torch.Tensor, labels: torch.Tensor | None = None, mix_z: torch.Tensor | None = None,
           cutoff: int | None = None, truncation: float = 1.0) -> torch.Tensor:
        """Per-layer styles (B, num_ws, w_dim): w(z) for every layer, or from `cutoff` on w(mix_z) (style mixing);
        truncation psi < 1 pulls them towards the mean w (psi=0: the mean for every z)."""
        ws = self.map(z, labels).unsqueeze(1).repeat(1, self.num_ws, 1)
        if mix_z is not None:
            ws[:, cutoff:] = self.map(mix_z, labels).unsqueeze(1)
        return ws if truncation == 1 else self.w_avg.lerp(ws, truncation)

    def synthesis(self, ws: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
        x = self.const.expand(len(ws), *self.const.shape)
        img, j = None, 0
        for level, to_img in enumerate(self.to_img):
            for _ in range(2 if level else 1):
                x = self.convs[j](x, ws[:, j], generator, noise)
                j += 1
            y = to_img(x, ws[:, j])
            img = y if img is None else resample(img, up=True) + y
        return img


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One extra channel: the standard deviation across a group of samples, averaged over features and voxels."""
    n = len(x)
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, *x.shape[1:])                        # (G, N/G, C, *S)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().flatten(1).mean(1)  # (N/G,)
    y = y.view(1, -1, 1, *[1] * (x.ndim - 2)).expand(g, -1, 1, *x.shape[2:]).reshape(n, 1, *x.shape[2:])
    return torch.cat([x, y], dim=1)


class DBlock(nn.Module):
    """Residual block: two 3x3 convolutions and a halving beside a 1x1 skip; the sum is scaled by 1/sqrt(2)."""

    def __init__(self, dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0, self.conv1 = EqualConv(dims, cin, cin, 3), EqualConv(dims, cin, cout, 3)
        self.skip = EqualConv(dims, cin, cout, 1, bias=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(resample(x, up=False)) + self.conv1(resample(self.conv0(x), up=False))) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, dims: int, img_channels: int, channels: list[int], num_classes: int, mbstd_group: int) -> None:
        super().__init__()
        c4 = channels[0]
        self.from_img = EqualConv(dims, img_channels, channels[-1], 1)
        self.blocks = nn.Sequential(*[DBlock(dims, channels[i], channels[i - 1]) for i in range(len(channels) - 1, 0, -1)])
        self.conv = EqualConv(dims, c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 4**dims, c4, act=True)
        self.out = EqualLinear(c4, 1)
        self.embed = nn.Embedding(num_classes, c4) if num_classes else None  # projection discriminator
        self.mbstd_group = mbstd_group

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(self.from_img(x))
        h = self.fc(self.conv(minibatch_std(h, self.mbstd_group)).flatten(1))
        score = self.out(h)
        if self.embed is not None:  # Miyato & Koyama (2018): + <embed(y), features>
            score = score + (self.embed(labels) * h).sum(1, keepdim=True) / math.sqrt(h.shape[1])
        return score


def r1_penalty(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||grad_x D(x)||^2 at the real images (which must require grad); graph kept."""
    (grad,) = torch.autograd.grad(scores.sum(), images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_lengths(images: torch.Tensor, ws: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample |J_w^T y| for y ~ N(0, I / voxels), J the Jacobian of the image w.r.t. the styles (averaged over
    layers as in StyleGAN2); the graph is kept."""
    y = torch.randn(images.shape, generator=generator, device=images.device) / math.sqrt(math.prod(images.shape[2:]))
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()


class StyleGAN2Module(GenerativeModule):
    def __init__(
        self,
        optimizer: Any,
        d_optimizer: Any,
        latent_dim: int = 128,       # z
        w_dim: int = 128,            # style vector w
        mapping_layers: int = 8,
        mapping_lr_mul: float = 0.01,
        embed_dim: int = 32,         # conditional: class embedding beside z (and projection in the discriminator)
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
        if not 0 <= mixing_prob <= 1 or r1_gamma < 0 or pl_weight < 0 or min(r1_every, pl_every, pl_batch_shrink) < 1:
            raise SynthError("model.mixing_prob must be in [0, 1], r1_gamma and pl_weight >= 0, r1_every, pl_every and pl_batch_shrink >= 1")
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
        self.collapse_watch = CollapseWatch(collapse_window, "bce")

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
        return [self.build_optimizer(self.optimizer_cfg, self.generator.parameters()),
                self.build_optimizer(self.d_optimizer_cfg, self.discriminator.parameters())]

    # ----- training: one discriminator and one generator update per batch (max_steps counts batches) ----------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        real, n = batch["image"], batch["image"].shape[0]
        labels = batch["label"] if self.conditional else None  # fakes are drawn with the real batch's labels
        opt_g, opt_d = self.optimizers()
        step, logs = self.global_step, {}
        with torch.no_grad():
            fake = self.generator.synthesis(self.training_ws(n, labels))
        r1_now = self.r1_gamma > 0 and step % self.r1_every == 0
        real_in = real.detach().requires_grad_(r1_now)
        d_real, d_fake = self.discriminator(real_in, labels), self.discriminator(fake, labels)
        loss_d = d_loss_fn("bce", d_real, d_fake)  # non-saturating logistic: softplus(-D(real)) + softplus(D(fake))
        if r1_now:
            logs["train/r1"] = r1 = r1_penalty(d_real, real_in)
            loss_d = loss_d + self.r1_gamma / 2 * r1 * self.r1_every
        self.manual_step(opt_d, loss_d, self.grad_clip, count=False)  # only generator steps count

        self.toggle_optimizer(opt_g)  # the discriminator's weights take no gradient from the generator's loss
        ws = self.training_ws(n, labels)
        fake = self.generator.synthesis(ws)
        loss_g = g_loss_fn("bce", self.discriminator(fake, labels))  # softplus(-D(fake))
        with torch.no_grad():
            self.generator.w_avg.copy_(ws[:, 0].mean(0).lerp(self.generator.w_avg, 0.995))
        if self.pl_weight and step % self.pl_every == 0:
            m = max(1, n // self.pl_batch_shrink)
            ws = self.training_ws(m, labels[:m] if labels is not None else None)
            lengths = path_lengths(self.generator.synthesis(ws), ws)
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().detach(), self.pl_decay))
            logs["train/pl"] = pl = (lengths - self.pl_mean).square().mean()
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

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp towards G (decay warmed up as (1+n)/(10+n) so short runs are not stuck near init); buffers
        (the mean w) copied."""
        n = self.global_step
        keep = min(self.ema_decay, (1 + n) / (10 + n))
        for ema, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            ema.lerp_(p, 1 - keep)
        for ema, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            ema.copy_(b)

    # ----- checks before fit, and validation (as the GAN family: a set-level signal) -------------------------
    def on_fit_start(self) -> None:
        self.require_unused_parameters_under_ddp("StyleGAN2")
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and dm.meta["n_val"] < 2:
            raise SynthError(f"val/mmd_rbf compares sets of images but the validation split holds {dm.meta['n_val']}: "
                             "add subjects or raise the val fraction of data.split")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.collect_val_images(batch)

    def on_validation_epoch_end(self) -> None:
        kept = self.log_sample_set_metrics()  # val/mmd_rbf (the monitor) and val/mmd, from the EMA generator
        if kept is not None:
            real, labels, fake = kept
            self.log("val/d_real", self.discriminator(real, labels).mean())
            self.log("val/d_fake", self.discriminator(fake, labels).mean())

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
