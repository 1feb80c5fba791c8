"""Preconditioning and the matching training noise distributions (EDM, Karras et al.
2022, Table 1): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

Each `Preconditioning` bundles, for one formulation (VP, VE, EDM), the four coefficients,
the training sigma distribution and the loss weight lambda(sigma), so that the loss and the
denoiser cannot disagree.
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
        if self.kind == "vp":
            return one, -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.vp_sigma_inv(sigma)
        if self.kind == "ve":
            return one, sigma, one, (0.5 * sigma).log()
        sd = self.sigma_data
        return (sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt(),
                1 / (sd ** 2 + sigma ** 2).sqrt(), sigma.log() / 4)

    # --- training distribution p(sigma) and weight lambda(sigma) ------------------------
    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        u = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        if self.kind == "vp":
            return self.vp_sigma(1 + u * (self.epsilon_t - 1))
        if self.kind == "ve":
            return self.ve_sigma_min * (self.ve_sigma_max / self.ve_sigma_min) ** u
        z = torch.randn(n, 1, 1, 1, generator=generator, device=device)
        return (z * self.P_std + self.P_mean).exp()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.kind in ("vp", "ve"):
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
        return 0.0, math.inf


def get_preconditioning(kind: str) -> Preconditioning:
    if kind not in ("vp", "ve", "edm"):
        raise ValueError(f"unknown preconditioning {kind!r}: choose vp, ve or edm")
    return Preconditioning(kind)
