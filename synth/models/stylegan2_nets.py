"""StyleGAN2's networks (Karras et al. 2020), 2D or 3D, and its two regularisers; the Lightning module that trains
them is synth/models/stylegan2.py. Generator: a mapping MLP (z, plus a normalised class embedding when conditional,
-> w; lr multiplier), a learned 4-voxel constant grown by doubling, modulated/demodulated convolutions, per-layer
noise with a learned strength, image outputs summed across levels (skip architecture), truncation towards the tracked
mean w. Discriminator: residual blocks, minibatch standard deviation, a projection term for the class. Equalised
learning rate everywhere (N(0, 1) weights scaled at run time). Upsampling is bi/trilinear, downsampling average
pooling (StyleGAN2 uses FIR filters)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GAIN = math.sqrt(2)  # leaky ReLU gain: keeps activations at unit variance


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * GAIN


def resample(x: torch.Tensor, up: bool) -> torch.Tensor:
    """x2 (bi/trilinear) or /2 (average pooling) on every spatial axis."""
    if up:
        return F.interpolate(x, scale_factor=2, mode=("bilinear", "trilinear")[x.ndim - 4], align_corners=False)
    return (F.avg_pool2d, F.avg_pool3d)[x.ndim - 4](x, 2)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit second moment per sample (StyleGAN's pixel norm of z)."""
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
    """The style s = A(w) scales the weight's input channels per sample; demodulation rescales each output channel
    by 1 / sqrt(sum_{i,k} (s_i w_oik)^2), so unit-variance inputs give unit-variance outputs whatever the style's
    scale. Computed as scale input -> shared convolution -> scale output (StyleGAN2-ADA's non-fused form: the same
    numbers as one grouped convolution of per-sample weights, faster in training). Synthesis layers add noise, bias
    and the activation; image outputs (1x1, no demodulation) add a bias."""

    def __init__(self, dims: int, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True,
                 up: bool = False, noise: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, *[k] * dims))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)  # style; starts at 1
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
        self.dims, self.gain, self.demodulate, self.up = dims, 1 / math.sqrt(cin * k**dims), demodulate, up

    def modulated(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The convolution alone (no noise, bias or activation): x (B, cin, *S), w (B, w_dim) -> (B, cout, *S')."""
        per_voxel = [1] * self.dims
        styles = self.affine(w)                                         # (B, cin)
        weight = self.weight * self.gain
        x = x * styles.view(*styles.shape, *per_voxel)
        if self.up:
            x = resample(x, up=True)
        x = (F.conv2d, F.conv3d)[self.dims - 2](x, weight, padding=self.weight.shape[-1] // 2)
        if self.demodulate:  # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2
            dcoefs = (styles.square() @ weight.square().flatten(2).sum(2).T + 1e-8).rsqrt()  # (B, cout)
            x = x * dcoefs.view(*dcoefs.shape, *per_voxel)
        return x

    def forward(self, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
        x = self.modulated(x, w)
        bias = self.bias.view(1, -1, *[1] * self.dims)
        if self.noise_strength is None:  # an image output
            return x + bias
        if noise:
            where = generator.device if generator is not None else x.device
            x = x + self.noise_strength * torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator, device=where).to(x)
        return lrelu(x + bias)


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
        return ws if truncation == 1 else self.w_avg.to(ws.dtype).lerp(ws, truncation)

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
    """One extra channel: the standard deviation across a group of samples, averaged over features and voxels (the
    group is the largest size <= `group` that divides the batch)."""
    n = len(x)
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, *x.shape[1:])                                # (G, N/G, C, *S)
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
    """Mean over samples of ||grad_x D(x)||^2 at the real images (which must require grad); the graph is kept so that
    the penalty trains D."""
    (grad,) = torch.autograd.grad(scores.sum(), images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_lengths(images: torch.Tensor, ws: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample |J_w^T y| for y ~ N(0, I / voxels), J the Jacobian of the image w.r.t. the styles (averaged over
    layers as in StyleGAN2); the graph is kept."""
    y = torch.randn(images.shape, generator=generator, device=images.device).to(images) / math.sqrt(math.prod(images.shape[2:]))
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()
