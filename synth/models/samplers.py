"""The denoising step between two timesteps of a discrete (DDPM-trained) noise schedule, for MONAI's DDPM and DDIM
schedulers, with the previous timestep taken from the schedule itself.

Why not MONAI's own `step`: `set_timesteps(k)` spaces the timesteps by (T - 1) / (k - 1), rounded
(T=1000, k=50: 999, 979, 958, ..., 20, 0), but `DDIMScheduler.step` moves the sample to t - T // k (here t - 20,
while the next timestep the network is told is t - 20 or t - 21: off by one step at ~40 % of the steps; T=100,
k=5: off by 5 at every step) and `DDPMScheduler.step` moves it to t - 1 (a strided DDPM chain removes one step of
noise per stride and ends mostly noise). `strided_step` is the generalised DDIM update (Song et al. 2021, eq. 12
and 16) from t to the schedule's next timestep t' (after the last one: the clean image):

    x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z,
    sigma = eta * sqrt((1 - abar_t') / (1 - abar_t) * (1 - abar_t / abar_t'))

eta=0 is DDIM (deterministic); eta=1 draws from the exact DDPM posterior q(x_t' | x_t, x0_hat) on the strided
schedule (ancestral sampling with fewer steps; for t' = t - 1 it is DDPM's own step with the "fixed_small"
variance). The scheduler supplies the schedule (alphas_cumprod), the prediction type and the clipping of x0_hat.
"""
from __future__ import annotations

import torch


def predicted_x0_and_eps(sched, model_output: torch.Tensor, x: torch.Tensor, alpha_bar: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's output as (x0_hat, eps_hat) for the scheduler's prediction type; x0_hat clipped to the
    scheduler's clip range when its clip_sample is set (eps_hat is not recomputed, as in MONAI and diffusers)."""
    a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    kind = sched.prediction_type
    if kind == "epsilon":
        x0, eps = (x - b * model_output) / a, model_output
    elif kind == "v_prediction":
        x0, eps = a * x - b * model_output, a * model_output + b * x
    elif kind == "sample":
        x0, eps = model_output, (x - a * model_output) / b
    else:
        raise ValueError(f"prediction_type {kind} has no DDIM step")
    if getattr(sched, "clip_sample", False):
        lo, hi = sched.clip_sample_values
        x0 = x0.clamp(lo, hi)
    return x0, eps


def strided_step(
    sched,                                   # a MONAI DDPMScheduler or DDIMScheduler (schedule, prediction type, clipping)
    model_output: torch.Tensor,              # the network's prediction at (x, t)
    t: int,                                  # the current timestep
    t_prev: int,                             # the schedule's next (smaller) timestep; < 0: the clean image
    x: torch.Tensor,                         # the sample at noise level t
    eta: float = 0.0,                        # 0: DDIM; 1: ancestral (the DDPM posterior on this stride)
    generator: torch.Generator | None = None,  # for the noise when eta > 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """x at noise level t -> (x at noise level t_prev, x0_hat)."""
    abar = sched.alphas_cumprod
    a_t = float(abar[t])
    final = getattr(sched, "final_alpha_cumprod", sched.one)  # DDIM: 1 or abar_0 (set_alpha_to_one); DDPM: 1
    a_prev = float(abar[t_prev]) if t_prev >= 0 else float(final)
    x0, eps = predicted_x0_and_eps(sched, model_output, x, a_t)
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev) if a_prev > a_t else 0.0
    sigma = eta * max(var, 0.0) ** 0.5
    out = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        out = out + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out, x0
