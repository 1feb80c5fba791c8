"""Consistency tuning of a trained model, every stage of a cascade or a single-resolution
baseline alike (Song et al. 2023, "Consistency Models", Sec. 3 and 5; Geng et al. 2024,
"Consistency Models Made Easy" (ECT), Sec. 3-4), and the plans that sample a tuned model.

Each stage r has a boundary s_r, the noise level where it ends: for a truncated stage its
truncation sigma, where the next stage takes over (the consistency target is that noisy state,
not a clean image); for the final stage EDM's sigma_min 0.002 (Song et al.'s eps; the step from
there to 0 is the identity). The consistency function f_s(x, t) maps a point at t >= s of a
probability-flow trajectory to the trajectory's point at s, with the boundary condition
f_s(x, s) = x built into its parametrisation (precond.consistency_output: c_skip = s/t,
c_out = 1 - s/t around the denoiser D, exactly x at t = s).

Training (one stage of `multires_loss`, `ConsistencyObjective`): with y_r the clean image and one
noise draw n,
    t ~ ECT's log-normal p(t) (P_mean, P_std) restricted to t > s (inverse-CDF draw),
    r = max(t (1 - max(n(t) / q^a, m)), s),  n(t) = 1 + k sigmoid(-b t),  a = floor(images / d)
        (ECT's mapping function: the step t - r shrinks by q every d images; at a = 0, r = s and
        the objective is the denoising loss, ECT's "diffusion pretraining as a special case"; the
        relative step stops shrinking at m = min_step, 1e-3, past which x_t and x_r agree in float32
        and 0 / 0 ends the run: ECT's own schedules end near 1/256),
    L = |f_s(y + t n, t) - sg(f_s(y + r n, r))|^2 / (t - r)   summed over pixels
        (ECT's weighting w = 1/(t - r), squared L2 metric; the target's network is the online one
        under stop-gradient, as in iCT / ECT; at r = s the target is y + s n exactly).
A stage above the lowest is conditioned as in diffusion training (truncation augmentation), the
same condition for both evaluations. The EMA, resumption and DDP are the trainer's own.

Sampling: the solver `consistency` (solvers.sample_consistency; Song et al. Alg. 1) jumps to the
stage's end at every evaluation. A tuned model's plans (`consistency_plan`): stage r with N
evaluations has N + 1 schedule levels from its sigma_max to s_r (and nfe N when truncated), so
its end is s_r; `check_plan` refuses a consistency stage of a model that was not tuned, or one that
ends anywhere but the model's boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .loss import BatchNoise
from .plan import StageConfig, StagePlan
from .precond import Preconditioning, consistency_output

SOLVER = "consistency"
FINAL_BOUNDARY = 0.002            # the final stage's end: EDM's sigma_min (Song et al.'s eps)


@dataclass
class ConsistencyConfig:
    """Consistency tuning (a preset's `consistency`): each stage's boundary and ECT's step schedule."""
    boundaries: dict[int, float] = field(default_factory=dict)   # stage resolution -> the noise level it ends at
    ratio: float = 2.0                # q: t - r shrinks by this factor every stage of the schedule (ECT: 2)
    stage_kimg: float = 1.0           # d: images per schedule stage, in thousands
    k: float = 8.0                    # n(t) = 1 + k sigmoid(-b t): larger steps at small t (ECT: k = 8, b = 1)
    b: float = 1.0
    P_mean: float = -1.1              # ECT's p(t): log t ~ N(P_mean, P_std^2)
    P_std: float = 2.0
    min_step: float = 1e-3            # t - r >= min_step t: closer, x_t and x_r agree to float32 rounding (0 / 0)

    def validate(self, resolutions: list[int], precond: Preconditioning) -> None:
        for name in ("ratio", "stage_kimg", "k", "b", "P_mean", "P_std", "min_step"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"consistency {name} must be a finite number, got {getattr(self, name)}")
        if not self.ratio > 1:
            raise ConfigError(f"consistency ratio {self.ratio:g}: the step t - r between the two noise levels must "
                              "shrink over training; choose ratio > 1 (ECT: 2)")
        if not (self.stage_kimg > 0 and self.k >= 0 and self.b >= 0 and self.P_std > 0 and 0 < self.min_step < 1):
            raise ConfigError("consistency schedule: stage_kimg and P_std must be > 0, k and b >= 0, min_step in (0, 1)")
        if not precond.additive_noise:
            raise ConfigError("consistency tuning works on x = y + sigma n (precond edm, vp or ve), not on flow models")
        if sorted(self.boundaries) != sorted(resolutions):
            raise ConfigError(f"consistency boundaries are given for {sorted(self.boundaries)}, the stages are "
                              f"{sorted(resolutions)}; give one per stage")
        for r, s in self.boundaries.items():
            if not (math.isfinite(s) and s > 0):
                raise ConfigError(f"consistency boundary of stage {r} must be a finite noise level > 0, got {s}")

    def schedule_stage(self, nimg: int) -> int:
        """a: how many times the step has shrunk after `nimg` training images."""
        return int(nimg // (self.stage_kimg * 1000))

    def sample_t(self, boundary: float, noise: BatchNoise) -> torch.Tensor:
        """t ~ log-normal(P_mean, P_std) restricted to t > boundary: (rows, 1, 1, 1)."""
        u = noise.rand(1, 1, 1).double()
        low = torch.special.ndtr(torch.tensor((math.log(boundary) - self.P_mean) / self.P_std, dtype=torch.float64))
        u = (low + (1 - low) * u).clamp(max=1 - 1e-12)
        t = torch.exp(self.P_mean + self.P_std * torch.special.ndtri(u))
        return t.clamp(min=boundary * (1 + 1e-6)).float()

    def partner(self, t: torch.Tensor, boundary: float, nimg: int) -> torch.Tensor:
        """r < t, ECT's mapping function at schedule stage a (see the module docstring), never below the
        boundary, and at least min_step t below t."""
        shrink = self.ratio ** -self.schedule_stage(nimg)
        step = (shrink * (1 + self.k * torch.sigmoid(-self.b * t))).clamp(min=self.min_step)
        return (t * (1 - step)).clamp(min=boundary)


class ConsistencyObjective:
    """A stage's consistency loss (module docstring), for `multires_loss(objective=...)`. The
    trainer sets `nimg`, the images seen so far, before each step (the step schedule)."""

    def __init__(self, config: ConsistencyConfig):
        self.config, self.nimg = config, 0

    def draw(self, precond, y: torch.Tensor, resolution: int, noise: BatchNoise):
        boundary = self.config.boundaries[resolution]
        t = self.config.sample_t(boundary, noise)
        return boundary, t, self.config.partner(t, boundary, self.nimg), noise.randn(*y.shape[1:])

    def loss(self, model, y, drawn, class_labels, cond, sigma_cond, augment_labels) -> torch.Tensor:
        boundary, t, r, n = drawn
        kw = dict(cond=cond, sigma_cond=sigma_cond, augment_labels=augment_labels)
        x_t, x_r = y + t * n, y + r * n
        online = consistency_output(x_t, model(x_t, t, class_labels, **kw).float(), t, boundary)
        with torch.no_grad():
            target = consistency_output(x_r, model(x_r, r, class_labels, **kw).float(), r, boundary)
        return ((online - target) ** 2).sum(dim=(1, 2, 3)) / (t - r).flatten()


def consistency_plan(base: StagePlan, boundaries: dict[int, float], evaluations: dict[int, int]) -> StagePlan:
    """The plan that samples a tuned model with `evaluations[r]` consistency steps in stage r, each
    stage from `base`'s sigma_max (and rho) to its boundary."""
    stages = []
    for i, s in enumerate(base):
        n = evaluations[s.resolution]
        stages.append(StageConfig(s.resolution, steps=n + 1, nfe=None if base.is_final(i) else n,
                                  sigma_min=boundaries[s.resolution], sigma_max=s.sigma_max, rho=s.rho, solver=SOLVER))
    return StagePlan(stages)


def boundaries_of(plan: StagePlan) -> dict[int, float]:
    """The boundaries a plan hands over at: each truncated stage's truncation sigma, FINAL_BOUNDARY for the last."""
    return {s.resolution: FINAL_BOUNDARY if plan.is_final(i) else plan.truncation_sigma(i) for i, s in enumerate(plan)}


def named_plans(base: StagePlan, boundaries: dict[int, float]) -> dict[str, tuple[StagePlan, str]]:
    """The plans a tuned model ships with (name -> (plan, description)): one and two steps per stage
    and, for a cascade, two steps below the top and one at it."""
    res = base.resolutions
    plans = {"one-step": ({r: 1 for r in res}, "one consistency step per stage"),
             "two-step": ({r: 2 for r in res}, "two consistency steps per stage")}
    if len(res) > 1:
        plans["two-low"] = ({r: 1 if r == base.top else 2 for r in res},
                            "two consistency steps in each stage below the top, one at the top")
    return {name: (consistency_plan(base, boundaries, steps), text) for name, (steps, text) in plans.items()}


def check_plan(plan: StagePlan, config: ConsistencyConfig | None, model: str) -> None:
    """A consistency stage needs a model tuned for it (`config`), at least one evaluation, no churn,
    and must end at the boundary the model was tuned for."""
    for i, s in enumerate(plan):
        if s.solver != SOLVER:
            continue
        where = f"stage {s.resolution}: solver {SOLVER}"
        if config is None:
            raise ConfigError(f"{where} needs a consistency-tuned model and this {model} model was not tuned for "
                              "it; pick another solver, or tune it with a consistency preset (`lowdiff train --preset "
                              "lowdiff-fashion-tiny-cond-ct --init-from MODEL ...`)")
        if s.steps < 2 or s.S_churn:
            raise ConfigError(f"{where} needs steps >= 2 (N evaluations: steps N + 1) and no churn")
        end = s.sigma_min if plan.is_final(i) else plan.truncation_sigma(i)
        boundary = config.boundaries[s.resolution]
        if not math.isclose(end, boundary, rel_tol=1e-6):
            raise ConfigError(f"{where} ends this stage at sigma {end:.6g}, but the model was tuned to end it at "
                              f"{boundary:.6g}; set sigma_min={boundary:.6g} (and, when truncated, steps = nfe + 1)")
