"""The cascaded, truncated sampler (paper Sec. 3.2, 3.4, Alg. 2).

Stages run bottom-up. Each starts from pure noise at its own sigma_max (or, with the warm
start `start='upsampled'`, from the stage below's output re-noised to it); every stage above
the lowest is conditioned on the previous stage's output, upsampled by the pyramid, at
the noise level where that stage was truncated. Only the last stage runs to sigma = 0.
All randomness comes from one generator per image, so an image depends only on its seed.
Flow models (latent presets) run the same plan over noise levels sigma = 1 - t with the
flow schedule, each stage guided by classifier-free guidance when its cfg_scale != 1
(lowdiff/diffusion/guidance.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import torch

from . import pyramid
from .guidance import guided
from ..seeds import check_seed
from .plan import StagePlan


class PerImageGenerator:
    """One torch.Generator per image (seed), so results do not depend on batch layout."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(check_seed(int(s))) for s in seeds]

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        return torch.stack([torch.randint(high, (), generator=g, device=self.device) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(tuple(x.shape[1:])).to(x.dtype)


@dataclass
class StageReport:
    resolution: int
    nfe: int
    sigma_start: float
    truncation_sigma: float           # where the stage stopped (the end of its schedule for the final stage)
    start: str = "noise"              # 'noise' or 'upsampled' (warm start from the stage below)


def warm_start(upsampled: torch.Tensor, sigma_below: float, sigma: float, noise: torch.Tensor,
               flow: bool = False) -> torch.Tensor:
    """The upsampled state of the stage below, at noise level `sigma_below`, re-noised to `sigma`
    (> sigma_below) with fresh unit noise `noise`. Nearest-neighbour upsampling keeps the noise
    level per pixel (lowdiff/diffusion/pyramid.py), so for x = y + sigma n (EDM) the fresh noise
    has std sqrt(sigma^2 - sigma_below^2); for the flow path x = (1 - sigma) y + sigma n the
    state is first scaled by a = (1 - sigma) / (1 - sigma_below), then noised to sigma."""
    a = (1 - sigma) / (1 - sigma_below) if flow else 1.0
    return a * upsampled + math.sqrt(max(sigma ** 2 - (a * sigma_below) ** 2, 0.0)) * noise


@dataclass
class CascadeResult:
    images: torch.Tensor                 # (N, C, R, R) in [-1, 1] (unclipped)
    stages: list[StageReport] = field(default_factory=list)

    @property
    def nfe(self) -> dict[int, int]:
        return {s.resolution: s.nfe for s in self.stages}


@torch.inference_mode()
def sample_cascade(denoiser, stages, rng: PerImageGenerator, channels: int,
                   class_labels: torch.Tensor | None = None, progress=None,
                   dtype: torch.dtype = torch.float64) -> CascadeResult:
    """Run the stage plan (a StagePlan or a list of StageConfig). `denoiser(x, sigma,
    class_labels, cond=, sigma_cond=)` is D (a `Denoiser`, or a `FastDenoiser` carrying the
    inference options)."""
    plan = stages if isinstance(stages, StagePlan) else StagePlan(stages)
    result = CascadeResult(images=torch.empty(0))
    cond, sigma_cond, below = None, None, None
    for i, stage in enumerate(plan):
        sigmas = plan.sigmas(i)
        noise = rng.randn((channels, stage.resolution, stage.resolution)).to(dtype)
        if stage.start == "upsampled" and below is not None:
            x = warm_start(pyramid.upsample(below[0], stage.resolution), below[1], sigmas[0].item(), noise,
                           flow=stage.schedule == "flow")
        else:
            x = noise * sigmas[0].item()

        model = guided(denoiser, stage)

        def denoise(x, sigma, cond=cond, sigma_cond=sigma_cond):
            out = model(x.to(torch.float32), sigma, class_labels, cond=cond, sigma_cond=sigma_cond)
            if progress is not None:
                progress.update(1)
            return out.to(dtype)

        x, nfe, reached = plan.solver(i)(denoise, x, sigmas, max_nfe=plan.budget(i), S_churn=stage.S_churn,
                                         S_min=stage.S_min, S_max=stage.S_max, S_noise=stage.S_noise,
                                         noise_fn=rng.randn_like)
        result.stages.append(StageReport(stage.resolution, nfe, float(sigmas[0]), reached, stage.start))
        if not plan.is_final(i):
            below = (x, reached)
            cond = pyramid.upsample(x, plan[i + 1].resolution).to(torch.float32)
            sigma_cond = torch.full((x.shape[0],), reached, device=x.device)
    result.images = x.to(torch.float32)
    return result
