"""The cascaded, truncated sampler (paper Sec. 3.2, 3.4, Alg. 2).

Stages run bottom-up. Each starts from pure noise at its own sigma_max (or, with the warm
start `start='upsampled'`, from the stage below's output re-noised to it by the preconditioning); every stage above
the lowest is conditioned on the previous stage's output, upsampled by the pyramid, at
the noise level where that stage was truncated. Only the last stage runs to sigma = 0.
A progressive plan (a single-resolution model; `StageConfig.handover`) runs the same stages
without conditions: each stage above the lowest continues the stage below's state, upsampled
and re-noised (`handover`).
All randomness comes from one generator per image, so an image depends only on its seed.
A diagnosis can stand in for the stages under the final one (`handed_over`: e.g. an oracle
condition made from real low-resolution data, benchmarks/latent_diagnosis.py).
Flow models (latent presets) run the same plan over noise levels sigma = 1 - t with the
flow schedule, each stage guided by classifier-free guidance when its cfg_scale != 1
(lowdiff/diffusion/guidance.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import math

import torch

from . import pyramid
from .guidance import guided
from ..seeds import check_seed
from .plan import StagePlan
from .precond import EDM, Preconditioning


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
    handover: str = "none"            # a progressive plan's stage: 'plain' or 'spectral' (`handover`)


def spectral_handover(below: torch.Tensor, sigma_below: float, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """The stage below's state x_b = y_b + sigma_below n_b (EDM), upsampled by f to the side of `noise`
    and completed to white noise of level sigma >= f sigma_below with fresh unit noise n (`noise`).

    Derivation (the idea of Spectral Progressive Diffusion, arXiv 2605.18736: fill the
    frequencies the upsampled image lacks; derived here for our pyramid). With D the f x f box
    filter and U nearest-neighbour upsampling (lowdiff/diffusion/pyramid.py), P = U D projects an
    image onto its block means; I - P onto the zero-mean detail within each block. White noise
    sigma n at the high resolution splits into independent parts: P(sigma n) = U(sigma D n) with
    D n ~ N(0, 1/f^2) per block, so its block means are white low-resolution noise of level
    sigma / f, and (I - P)(sigma n), per pixel of variance sigma^2 (1 - 1/f^2). U x_b holds the
    block means y_b = D y of the image with white noise sigma_below; it lacks the detail. So
    x = U x_b + sigma (I - P) n + sqrt(sigma^2 - f^2 sigma_below^2) P n
    has block-mean noise of level sqrt(sigma_below^2 + sigma^2 / f^2 - sigma_below^2) = sigma / f
    and detail noise sigma (I - P) n, independent: together exactly white noise of level sigma,
    around U D y, the image's block means. At sigma = f sigma_below (the natural switch) no noise
    is added to the block means. The plain hand-over (a warm start) instead adds white noise
    sqrt(sigma^2 - sigma_below^2) n, leaving too much noise in the block means and too little in
    the detail (tests/test_progressive.py measures both per frequency band). `Preconditioning.renoise`
    (a warm start) is the plain hand-over."""
    factor = noise.shape[-1] // below.shape[-1]
    means = pyramid.upsample(pyramid.downsample(noise, below.shape[-1]), noise.shape[-1])      # P n
    return (pyramid.upsample(below, noise.shape[-1]) + sigma * (noise - means)
            + math.sqrt(max(sigma ** 2 - (factor * sigma_below) ** 2, 0.0)) * means)


def handover(kind: str, below: torch.Tensor, sigma_below: float, sigma: float, noise: torch.Tensor,
             precond: Preconditioning = EDM()) -> torch.Tensor:
    """A progressive plan's stage start (`StageConfig.handover`; EDM-schedule models only): the stage
    below's state at `sigma_below`, upsampled to the side of `noise` and re-noised to `sigma`,
    plainly (`precond.renoise`, a warm start) or spectrally (`spectral_handover`)."""
    if kind == "spectral":
        return spectral_handover(below, sigma_below, sigma, noise)
    return precond.renoise(pyramid.upsample(below, noise.shape[-1]), sigma_below, sigma, noise)


@dataclass
class CascadeResult:
    images: torch.Tensor                 # (N, C, R, R) in [-1, 1] (unclipped)
    stages: list[StageReport] = field(default_factory=list)

    @property
    def nfe(self) -> dict[int, int]:
        return {s.resolution: s.nfe for s in self.stages}


@torch.inference_mode()
def sample_cascade(denoiser, plan: StagePlan, rng: PerImageGenerator, channels: int,
                   class_labels: torch.Tensor | None = None, progress=None,
                   dtype: torch.dtype = torch.float64, precond: Preconditioning = EDM(),
                   handed_over: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> CascadeResult:
    """Run the stage plan. `denoiser(x, sigma, class_labels, cond=, sigma_cond=)` is D (a `Denoiser`,
    or a `FastDenoiser` carrying the inference options); `precond` its preconditioning, which
    re-noises a warm-started stage's start (`Preconditioning.renoise`).

    `handed_over(noise, sigma)` (a diagnosis) stands in for the stages under the final one: it gets the
    start noise of the stage just under the final one and that stage's truncation sigma, and returns the
    state that stage hands over (an oracle: real data perturbed to sigma with that noise). Those stages
    are not run (they report 0 NFE) but still draw their start noise, so the final stage draws each
    seed's own noise: when the lower stages draw nothing while solving (no churn), handing over the
    cascade's own state gives the cascade's images."""
    result = CascadeResult(images=torch.empty(0))
    cond, sigma_cond, below = None, None, None
    for i, stage in enumerate(plan):
        sigmas = plan.sigmas(i)
        noise = rng.randn((channels, stage.resolution, stage.resolution)).to(dtype)
        if handed_over is not None and not plan.is_final(i):
            reached = plan.truncation_sigma(i)
            x = handed_over(noise, reached).to(dtype) if i == plan.final - 1 else noise     # the rest: unused
            result.stages.append(StageReport(stage.resolution, 0, float(sigmas[0]), reached, stage.start))
            below, cond, sigma_cond = _hand_over(plan, i, x, reached)
            continue
        if stage.handover != "none":
            x = handover(stage.handover, below[0], below[1], sigmas[0].item(), noise, precond)
        elif stage.start == "upsampled" and below is not None:
            x = precond.renoise(pyramid.upsample(below[0], stage.resolution), below[1], sigmas[0].item(), noise)
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
        result.stages.append(StageReport(stage.resolution, nfe, float(sigmas[0]), reached, stage.start,
                                         stage.handover))
        if not plan.is_final(i):
            below, cond, sigma_cond = _hand_over(plan, i, x, reached)
    result.images = x.to(torch.float32)
    return result


def _hand_over(plan: StagePlan, i: int, x: torch.Tensor, reached: float):
    """What stage i + 1 gets from stage i's state x at noise level `reached`: (the state and its level,
    for a warm start or a progressive hand-over; the condition and its noise level, None in a
    progressive plan, whose next stage is conditioned on nothing)."""
    if plan[i + 1].handover != "none":
        return (x, reached), None, None
    cond = pyramid.upsample(x, plan[i + 1].resolution).to(torch.float32)
    return (x, reached), cond, torch.full((x.shape[0],), reached, device=x.device)
