"""`lowdiff tune`'s options, its budget and the cost model a plan is measured by (lowdiff/eval/tune.py
has the search): effective NFE (paper Appendix B) and the predicted latency per image,
sum_r NFE_r latency_r + steps * overhead, and the fitting of a plan into the budget. A guided evaluation
(classifier-free guidance: a batch of twice the images) counts as two in both (`StagePlan.cost_per_stage`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..diffusion.plan import StagePlan
from ..diffusion.solvers import tune_defaults
from ..errors import ConfigError

COSTS = ("latency", "flops")                 # what effective NFE weighs each evaluation by
PROGRESSIVE_MODES = ("no", "also", "only")   # progressive plans of a single-resolution model: none, too, only


@dataclass
class TuneOptions:
    budget_nfe: float | None = None          # effective NFE at most
    budget_latency: float | None = None      # predicted seconds per image at most
    trials: int = 100                        # plans screened at most
    num: int = 500                           # samples per FID of the confirmed plans
    screen_num: int = 200                    # samples per FID when screening (the first of the num seeds)
    confirm: int = 8                         # best screened plans evaluated again on num samples
    seed: int = 0                            # seeds seed .. seed + num - 1 for every plan
    batch: int = 250
    solvers: tuple[str, ...] = field(default_factory=tune_defaults)   # names in SOLVERS
    cost: str = "latency"                    # per-evaluation cost for effective NFE: one of COSTS
    warm_start: bool = True                  # search warm-started stages (start=upsampled) too
    progressive: str = "also"                # single-resolution models: progressive plans too (also), only, or no
                                             # (PROGRESSIVE_MODES)
    guidance: bool | None = None             # move each stage's guidance scale and interval; None: for conditional
                                             # models trained with label dropout or guided (guidance_searched)


class CostModel:
    """Effective NFE and predicted latency of a plan from per-resolution evaluation costs and
    the time per solver step outside the network."""

    def __init__(self, latency: dict[int, float], batch: int, weights: dict[int, float] | None = None,
                 step_overhead: float = 0.0):
        self.latency, self.batch = latency, batch          # seconds per evaluation of `batch` images
        self.weights = weights or latency                   # what effective NFE weighs by
        self.step_overhead = step_overhead                  # seconds per evaluation outside the network

    def effective_nfe(self, plan: StagePlan) -> int:
        return plan.effective_nfe(self.weights)

    def latency_per_image(self, plan: StagePlan) -> float:
        """The network's share at one batch's latency per evaluation (two for a guided one: a doubled batch,
        an upper bound where the device is not yet saturated), the solver's per step."""
        cost = plan.cost_per_stage
        return (sum(n * self.latency[r] for r, n in cost.items()) + plan.total_nfe * self.step_overhead) / self.batch


def cost_text(plan: StagePlan, costs: CostModel) -> str:
    return (f"effective NFE {costs.effective_nfe(plan)}, {costs.latency_per_image(plan) * 1e3:.3g} ms per image "
            "predicted")


def within_budget(stages, costs: CostModel, opts: TuneOptions) -> bool:
    if opts.budget_nfe is not None and costs.effective_nfe(stages) > opts.budget_nfe:
        return False
    return opts.budget_latency is None or costs.latency_per_image(stages) <= opts.budget_latency


FITS = ("costliest stage first", "lower stages first", "in proportion")


def fit_budget(plan: StagePlan, costs: CostModel, opts: TuneOptions, order: str = FITS[0]) -> StagePlan:
    """Shrink the plan until it fits, one step (final stage) or one NFE (truncated stages) at a
    time, taking it from: the stage that costs most ('costliest stage first'); the truncated
    stages before the final one ('lower stages first'); or the stage that has kept the largest
    share of its own NFE ('in proportion'). When every stage is down to one evaluation, the guidance of
    the stage it costs most in is dropped (cfg_scale 1: one evaluation instead of two)."""
    original = plan

    def shrinkable(i):
        return plan[i].steps > 1 if plan.is_final(i) else plan.nfe(i) > 1

    while not within_budget(plan, costs, opts):
        candidates = [i for i in range(len(plan)) if shrinkable(i)]
        guided = [i for i in range(len(plan)) if plan.guided_nfe(i)]
        if not candidates and guided:
            plan = plan.replace(max(guided, key=lambda i: plan.guided_nfe(i) * costs.latency[plan[i].resolution]),
                                cfg_scale=1.0)
            continue
        if not candidates:
            raise ConfigError(f"the budget is smaller than the cheapest plan (one evaluation per stage: "
                              f"{cost_text(plan, costs)}); raise it")
        if order == FITS[0]:
            i = max(candidates, key=lambda i: plan.evaluation_cost(i) * costs.latency[plan[i].resolution])
        elif order == FITS[1]:
            lower = [i for i in candidates if not plan.is_final(i)]
            i = max(lower or candidates, key=lambda i: plan.evaluation_cost(i) * costs.latency[plan[i].resolution])
        else:
            i = max(candidates, key=lambda i: plan.nfe(i) / original.nfe(i))
        plan = (plan.replace(i, steps=plan[i].steps - 1) if plan.is_final(i) else plan.replace(i, nfe=plan.nfe(i) - 1))
    return plan
