"""The rectified-flow objective of the latent-space models (SiT / LightningDiT, spec
lightningdit 2.1 and 3.1-3.2), expressed in lowdiff's noise-level language.

Mapping. LightningDiT's time runs from t = 0 (noise) to t = 1 (data) on the linear path
x_t = t y + (1 - t) n. lowdiff's noise level is sigma = 1 - t, so

    x = (1 - sigma) y + sigma n,   u = dx/dt = y - n,   D(x; sigma) = x + sigma v,

with v the network's velocity (precond 'flow', lowdiff/diffusion/precond.py). The EDM
solvers' Euler step in sigma, x + (sigma' - sigma)(x - D)/sigma, equals the flow's Euler
step x + (t' - t) v, so a stage plan (StageConfig: steps / nfe / sigma range / truncation)
describes a flow sampler unchanged; `flow_sigmas` gives LightningDiT's shifted time grid.

Training (Sec. 3.4 of the paper, per resolution, with the flow loss):
  y_r from the latent pyramid; sigma ~ logit-normal; x = (1 - sigma) y_r + sigma n
  r above the lowest: sigma_c ~ logit-normal independently,
                      cond = upsample((1 - sigma_c) y_{r/2} + sigma_c n')
  L_r = mean_{C,H,W} (v - u)^2  [+ mean_{H,W} (1 - cos_C(v, u)) with the cosine term]
and the total is sum_r w_r mean_batch(L_r). Class-label dropout (CFG) is in the network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import StageConfig
from . import pyramid
from .loss import BatchNoise


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """LightningDiT's timestep shift t' = s t / (1 + (s - 1) t); s < 1 takes small steps near
    the noise end (t = 0). In sigma = 1 - t it is SD3's shift with factor 1/s."""
    return shift * t / (1 + (shift - 1) * t)


def flow_sigmas(steps: int, sigma_min: float = 0.0, sigma_max: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 noise levels 1 - shift(t_i) from sigma_max down to sigma_min (float64), t_i
    uniform between the unshifted times of the two ends (the shift's inverse is the shift by
    1/s), so the grid is LightningDiT's shifted grid restricted to [sigma_min, sigma_max].
    With sigma in [0, 1] this is LightningDiT's Euler grid linspace(0, 1, steps + 1), shifted."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    ends = shift_time(torch.tensor([1 - sigma_max, 1 - sigma_min], dtype=torch.float64), 1 / shift)
    t = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64)
    sigmas = 1 - shift_time(t, shift)
    sigmas[0], sigmas[-1] = sigma_max, sigma_min          # exact ends (only rounding differs)
    return sigmas


# ---------------------------------------------------------------------------------------
# Classifier-free guidance with a guidance interval (spec lightningdit 3.2), on all channels.

class Guided:
    """D_u + w (D_c - D_u) at noise levels <= sigma_max, else D_c; same call signature as the
    denoiser. The unconditional half uses the null class (all-zero one-hot rows) and the same
    condition; both halves run as one doubled batch. Outside the interval only the
    conditional half is evaluated. Since D is affine in the network output with the same
    coefficients for both halves, guiding D is guiding the velocity, on every channel."""

    def __init__(self, denoiser, scale: float, sigma_max: float = float("inf")):
        self.denoiser, self.scale, self.sigma_max = denoiser, scale, sigma_max

    @property
    def preset(self):
        return self.denoiser.preset

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


def guided(denoiser, stage: StageConfig):
    """The denoiser a stage samples with: itself, or `Guided` when stage.cfg_scale != 1."""
    return denoiser if stage.cfg_scale == 1 else Guided(denoiser, stage.cfg_scale, stage.cfg_sigma_max)


# ---------------------------------------------------------------------------------------
# The multi-resolution flow loss.

def velocity_loss(v: torch.Tensor, u: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Per-sample mean squared error over C, H, W, plus 1 - cos(v, u) over channels averaged
    over positions when `cosine` (LightningDiT's equal-weight sum)."""
    loss = (v - u).pow(2).mean(dim=(1, 2, 3))
    if cosine:
        loss = loss + (1 - F.cosine_similarity(v, u, dim=1)).mean(dim=(1, 2))
    return loss


def flow_multires_loss(model, images: torch.Tensor | dict[int, torch.Tensor], class_labels=None,
                       augment_labels=None, weights: dict[int, float] | None = None,
                       noise: BatchNoise | None = None, cosine: bool = False):
    """Returns (total loss, {resolution: loss}). `images` is the clean top resolution (the
    pyramid is built here) or the pyramid itself {r: y_r}, as latent datasets store it."""
    precond, resolutions = model.precond, model.resolutions
    top = images if isinstance(images, torch.Tensor) else images[resolutions[-1]]
    noise = noise or BatchNoise(None, top.shape[0], device=top.device)
    clean = pyramid.build(images, resolutions) if isinstance(images, torch.Tensor) else images
    per_res: dict[int, torch.Tensor] = {}
    total = top.new_zeros(())
    for i, r in enumerate(resolutions):
        y = clean[r]
        sigma = noise.sigma(precond)
        n = noise.randn(*y.shape[1:])
        x = precond.perturb(y, sigma, n)
        cond = sigma_c = None
        if i > 0:
            low = clean[resolutions[i - 1]]
            sigma_c = noise.sigma(precond)
            cond = pyramid.upsample(precond.perturb(low, sigma_c, noise.randn(*low.shape[1:])), r)
        v = model.network_output(x, sigma, class_labels, cond=cond, sigma_cond=sigma_c,
                                 augment_labels=augment_labels)
        loss = velocity_loss(v, y - n, cosine).mean()
        per_res[r] = loss
        total = total + (weights or {}).get(r, 1.0) * loss
    return total, per_res
