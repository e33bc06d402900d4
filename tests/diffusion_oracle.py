"""An oracle denoiser and the exact moments of what each sampler draws with it (test helper, no pytest tests here).

For data that is Gaussian per pixel, x0 ~ N(mu, s^2), the best possible network (the posterior mean of the noise,
the velocity or the clean image given x_t) is known in closed form; plugged in place of a trained UNet it makes a
sampler's output depend on the sampler alone. Each step of every sampler is then affine in x plus independent
Gaussian noise, so what the chain draws is Gaussian with a mean and variance that follow by a scalar recursion,
written here from the textbook formulas (DDPM posterior q(x_t' | x_t, x0), DDIM eq. 12, rectified-flow Euler step):
the reference the sampled mean/std must match. (Few-step samplers do not reach (mu, s) exactly: their discretisation
shrinks the spread, by as much as the recursion says and no more.)
"""
from __future__ import annotations

import math

import torch


class GaussianOracle(torch.nn.Module):
    """The exact prediction of a denoiser for data x0 ~ N(mu, s^2) per element, for a DDPM-type schedule
    (x_t = sqrt(abar) x0 + sqrt(1 - abar) eps) or a rectified flow (x_t = (1 - t/T) x0 + t/T eps)."""

    def __init__(self, scheduler, mu: float, s: float, flow: bool = False) -> None:
        super().__init__()
        self.flow, self.mu, self.s2 = flow, float(mu), float(s) ** 2
        self.T = scheduler.num_train_timesteps
        self.kind = "flow" if flow else scheduler.prediction_type
        self.abar = None if flow else scheduler.alphas_cumprod.double()
        self.calls = 0

    def coefficients(self, t):
        """(a, b) with x_t = a x0 + b eps."""
        if self.flow:
            tau = torch.as_tensor(t, dtype=torch.float64) / self.T
            return 1 - tau, tau
        abar = self.abar[torch.as_tensor(t).long().cpu()]
        return abar.sqrt(), (1 - abar).sqrt()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels=None) -> torch.Tensor:
        self.calls += 1
        a, b = self.coefficients(timesteps)
        a, b = (v.to(x.device).view(-1, *[1] * (x.ndim - 1)) for v in (a, b))
        r = x.double() - a * self.mu
        var = a * a * self.s2 + b * b
        x0, eps = self.mu + a * self.s2 / var * r, b / var * r
        out = {"epsilon": eps, "v_prediction": a * eps - b * x0, "sample": x0, "flow": x0 - eps}[self.kind]
        return out.to(x.dtype)


def expected_moments(timesteps: list[int], scheduler, kind: str, mu: float, s: float, eta: float | None = None) -> tuple[float, float]:
    """(mean, std) of what a chain over `timesteps` (the scheduler's own list, each step going to the next one and
    the last to the clean image) draws from N(0, 1) noise with the oracle. kind: ancestral | ddim | flow."""
    m, v = 0.0, 1.0
    s2 = s * s
    T = scheduler.num_train_timesteps
    for i, t in enumerate(timesteps):
        last = i + 1 == len(timesteps)
        if kind == "flow":  # x' = x + dt * (x0_hat - eps_hat), dt = (t - t') / T
            t2 = 0 if last else timesteps[i + 1]
            a, b = 1 - t / T, t / T
            var = a * a * s2 + b * b
            g0, ge = a * s2 / var, b / var            # x0_hat = mu + g0 r, eps_hat = ge r, r = x - a mu
            dt = (t - t2) / T
            A, B = 1 + dt * (g0 - ge), dt * (mu - (g0 - ge) * a * mu)
            m, v = A * m + B, A * A * v
            continue
        abar = scheduler.alphas_cumprod.double()
        a = float(abar[t])
        a2 = float(getattr(scheduler, "final_alpha_cumprod", 1.0)) if last else float(abar[timesteps[i + 1]])
        g = math.sqrt(a) * s2 / (a * s2 + 1 - a)      # x0_hat = mu + g (x - sqrt(a) mu)
        if kind == "ancestral":                       # the DDPM posterior q(x_t' | x_t, x0 = x0_hat)
            c0 = math.sqrt(a2) * (1 - a / a2) / (1 - a)
            ct = math.sqrt(a / a2) * (1 - a2) / (1 - a)
            noise = (1 - a2) / (1 - a) * (1 - a / a2)
            A, B = c0 * g + ct, c0 * (mu - g * math.sqrt(a) * mu)
        else:                                         # DDIM with eta: sqrt(a2) x0 + sqrt(1 - a2 - sig^2) eps + sig z
            sig2 = (eta or 0.0) ** 2 * (1 - a2) / (1 - a) * (1 - a / a2)
            k = math.sqrt(max(1 - a2 - sig2, 0.0) / (1 - a))  # eps_hat = (x - sqrt(a) x0_hat) / sqrt(1 - a)
            A = (math.sqrt(a2) - k * math.sqrt(a)) * g + k
            B = (math.sqrt(a2) - k * math.sqrt(a)) * (mu - g * math.sqrt(a) * mu)
            noise = sig2
        m, v = A * m + B, A * A * v + noise
    return m, math.sqrt(v)
