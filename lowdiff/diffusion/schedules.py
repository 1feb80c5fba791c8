"""Noise-level schedules: the explicit sigma arrays the solvers integrate over.

- `edm_sigmas`: EDM's rho-schedule (Karras et al. 2022, Eq. 5), for VP / VE / EDM models.
- `flow_sigmas`: LightningDiT's uniform time grid with the timestep shift, for rectified-flow
  models, whose noise level is sigma = 1 - t of the path x = (1 - sigma) y + sigma n
  (t = 1 data; lowdiff/diffusion/precond.py, `Flow`).
"""
from __future__ import annotations

import torch


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               append_zero: bool = True) -> torch.Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, float64."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    i = torch.arange(steps, dtype=torch.float64, device="cpu")           # host-side, whatever the default device
    ramp = i / max(steps - 1, 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


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
    ends = shift_time(torch.tensor([1 - sigma_max, 1 - sigma_min], dtype=torch.float64, device="cpu"), 1 / shift)
    t = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64, device="cpu")
    sigmas = 1 - shift_time(t, shift)
    sigmas[0], sigmas[-1] = sigma_max, sigma_min          # exact ends (only rounding differs)
    return sigmas
