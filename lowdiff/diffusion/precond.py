"""Preconditioning and the matching training noise distributions (EDM, Karras et al.
2022, Table 1): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

Each `Preconditioning` bundles, for one formulation (VP, VE, EDM, flow), the four coefficients,
the training sigma distribution and the loss weight lambda(sigma), so that the loss and the
denoiser cannot disagree.

Flow (rectified flow / linear path, SiT and LightningDiT; lowdiff/diffusion/flow.py): the
noise level is sigma = 1 - t on x = (1 - sigma) y + sigma n, the network F predicts the
velocity u = y - n at time c_noise = t, and D = x + sigma F is the data estimate, so
c_skip = c_in = 1 and c_out = sigma. With D in this form the EDM solvers' Euler step in
sigma, x + (sigma' - sigma)(x - D)/sigma = x + (t' - t) F, is the flow's Euler step in t.
Training draws t from the logit-normal distribution, t = sigmoid(z), z ~ N(0, 1) (SD3's
lognorm(0, 1), symmetric, so sigma has the same law); lambda = 1/sigma^2 turns
|D - y|^2 into |F - u|^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preconditioning:
    kind: str
    # VP (Song et al. 2021): beta_d, beta_min, M, epsilon_t
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000
    epsilon_t: float = 1e-5
    # VE
    ve_sigma_min: float = 0.02
    ve_sigma_max: float = 100.0
    # EDM
    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2
    # flow: logit-normal time, logit(t) ~ N(flow_mean, flow_std^2)
    flow_mean: float = 0.0
    flow_std: float = 1.0

    # --- VP schedule sigma(t) and its inverse -------------------------------------------
    def vp_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def vp_sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    # --- coefficients -----------------------------------------------------------------
    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) for sigma of shape (N, 1, 1, 1)."""
        one = torch.ones_like(sigma)
        if self.kind == "flow":
            return one, sigma, one, 1 - sigma
        if self.kind == "vp":
            return one, -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.vp_sigma_inv(sigma)
        if self.kind == "ve":
            return one, sigma, one, (0.5 * sigma).log()
        sd = self.sigma_data
        return (sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt(),
                1 / (sd ** 2 + sigma ** 2).sqrt(), sigma.log() / 4)

    def perturb(self, y: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The noisy input at level sigma: y + sigma n (VE form), (1 - sigma) y + sigma n (flow)."""
        if self.kind == "flow":
            return (1 - sigma) * y + sigma * noise
        return y + sigma * noise

    # --- training distribution p(sigma) and weight lambda(sigma) ------------------------
    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        if self.kind == "flow":
            z = torch.randn(n, 1, 1, 1, generator=generator, device=device)
            return torch.sigmoid(-(z * self.flow_std + self.flow_mean))     # sigma = 1 - sigmoid(logit t)
        u = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        if self.kind == "vp":
            return self.vp_sigma(1 + u * (self.epsilon_t - 1))
        if self.kind == "ve":
            return self.ve_sigma_min * (self.ve_sigma_max / self.ve_sigma_min) ** u
        z = torch.randn(n, 1, 1, 1, generator=generator, device=device)
        return (z * self.P_std + self.P_mean).exp()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.kind in ("vp", "ve", "flow"):
            return 1 / sigma ** 2
        sd = self.sigma_data
        return (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2

    @property
    def sigma_range(self) -> tuple[float, float]:
        """Noise levels the network supports (the EDM sampler clamps its range to these)."""
        if self.kind == "vp":
            return float(self.vp_sigma(torch.tensor(self.epsilon_t))), float(self.vp_sigma(torch.tensor(1.0)))
        if self.kind == "ve":
            return self.ve_sigma_min, self.ve_sigma_max
        if self.kind == "flow":
            return 0.0, 1.0
        return 0.0, math.inf


def get_preconditioning(kind: str) -> Preconditioning:
    if kind not in ("vp", "ve", "edm", "flow"):
        raise ValueError(f"unknown preconditioning {kind!r}: choose vp, ve, edm or flow")
    return Preconditioning(kind)
