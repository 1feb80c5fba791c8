"""Classifier-free guidance (Ho & Salimans 2022) with a guidance interval (Kynkaanniemi et al. 2024, as
LightningDiT samples), on all channels."""
from __future__ import annotations

import torch


class Guided:
    """D_u + w (D_c - D_u) at noise levels <= sigma_max, else D_c; same call signature as the
    denoiser. The unconditional half uses the null class (all-zero one-hot rows) and the same
    condition; both halves run as one doubled batch. Outside the interval only the
    conditional half is evaluated. Since D is affine in the network output with the same
    coefficients for both halves, guiding D is guiding the velocity, on every channel."""

    def __init__(self, denoiser, scale: float, sigma_max: float = float("inf")):
        self.denoiser, self.scale, self.sigma_max = denoiser, scale, sigma_max

    def __call__(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None, sigma_cond=None) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("classifier-free guidance needs class labels")
        if float(torch.as_tensor(sigma).reshape(-1)[0]) > self.sigma_max:
            return self.denoiser(x, sigma, class_labels, cond=cond, sigma_cond=sigma_cond)
        labels = torch.cat([class_labels, torch.zeros_like(class_labels)])
        d_c, d_u = self.denoiser(_twice(x), _twice(sigma), labels, cond=_twice(cond),
                                 sigma_cond=_twice(sigma_cond)).chunk(2)
        return d_u + self.scale * (d_c - d_u)


def _twice(v):
    """Stack a per-image tensor on itself for the doubled batch; scalars pass through."""
    if isinstance(v, torch.Tensor) and v.numel() > 1:
        return torch.cat([v, v])
    return v


def guided(denoiser, stage):
    """The denoiser a stage samples with: itself, or `Guided` when stage.cfg_scale != 1."""
    return denoiser if stage.cfg_scale == 1 else Guided(denoiser, stage.cfg_scale, stage.cfg_sigma_max)
