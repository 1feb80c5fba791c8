"""`lowdiff tune`: search a trained model's stage plan for the lowest FID within a budget.

Any model can be tuned, a cascade or a single-resolution baseline, with the same search,
budget and cost model, so that both families are compared at their best.

The budget is an effective NFE (paper Appendix B: each stage's NFE weighted by its cost
per evaluation relative to the target resolution, measured latency or FLOPs) and/or a
predicted latency per image. The cost model is measured on the device the tuner runs on:
one calibration run of the sampler, timed inside and outside the network, gives the latency
of an evaluation at each resolution and the time per solver step outside the network
(solver arithmetic, noise, hand-over), so a plan's predicted time is
sum_r NFE_r latency_r + steps * overhead.

The search is global first, then local, with successive halving on the sample count:
1. starts: the model's own plan fitted to the budget three ways (and with every solver at
   equal NFE), plus a ladder of few-step plans with one one-evaluation solver (DPM-Solver++,
   iPNDM) in every stage: cheap truncated low-resolution stages and as many final-stage steps
   as the budget leaves, plus any plans the user gives (e.g. one tuned at a larger budget),
   fitted to the budget the same three ways;
2. coordinate descent (a pattern search) from the best start: one coordinate at a time (a
   stage's solver, steps, truncation NFE, a trade of final-stage steps against low-resolution
   evaluations, sigma_max, sigma_min, rho, and the warm start of a stage from the one below
   with its sigma), keeping the best move if the FID improves, until a pass brings nothing or
   the trials are spent;
3. every plan above is screened on the first `screen_num` seeds; the best `confirm` are
   evaluated again on all `num` seeds and the lowest FID there is chosen.
Every FID uses the same seeds (common random numbers: the screening seeds are the first
of the confirmation seeds), so differences between plans are not sampling noise of the
seed choice. All screened plans form the FID / throughput Pareto front; throughput is
measured while generating.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..diffusion.plan import StageConfig, StagePlan
from ..diffusion.precond import EDM
from ..diffusion.solvers import SOLVERS
from ..distributed import SINGLE, World
from ..errors import ConfigError
from ..files import atomic_write
from .bench import BenchOptions, NetworkTimer, time_sampling
from .evaluate import evaluate_pipeline, reference_for


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
    solvers: tuple[str, ...] = ("heun", "dpmpp2m", "ipndm")
    cost: str = "latency"                    # per-evaluation cost for effective NFE: latency | flops
    warm_start: bool = True                  # search warm-started stages (start=upsampled) too
    progressive: str = "also"                # single-resolution models: progressive plans too (also), only, or no


@dataclass
class Trial:
    stages: StagePlan
    move: str                                # what changed from the plan it came from
    fid: float                               # on the screening samples
    effective_nfe: int
    latency_per_image_s: float               # predicted by the cost model
    images_per_s: float                      # measured while generating the FID samples
    nfe: dict[int, int] = field(default_factory=dict)
    pareto: bool = False
    fid_confirmed: float | None = None       # on all num samples, for the confirmed plans

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [_stage_summary(s) for s in self.stages]
        return d


def _stage_summary(s: StageConfig) -> dict:
    return {k: getattr(s, k) for k in ("resolution", "solver", "steps", "nfe", "sigma_min", "sigma_max", "rho",
                                       "start", "handover")}


def _key(stages: StagePlan) -> str:
    return json.dumps([asdict(s) for s in stages], sort_keys=True, default=str)


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
        nfe = plan.nfe_per_stage
        return (sum(n * self.latency[r] for r, n in nfe.items()) + sum(nfe.values()) * self.step_overhead) / self.batch


def calibration_plan(plan: StagePlan) -> StagePlan:
    """A short plan with every resolution evaluated a few times: DPM-Solver++(2M), 4 evaluations
    per truncated stage, 4 steps in the final one."""
    cal = plan.with_solver("dpmpp2m")
    for i in range(len(cal)):
        cal = cal.replace(i, steps=4) if cal.is_final(i) else cal.replace(i, steps=max(cal[i].steps, 5), nfe=4)
    return cal


def measure_costs(pipe, opts: TuneOptions) -> CostModel:
    """Time a calibration run (after one warm-up) at the screening batch size, inside and outside
    the network (`NetworkTimer`); weights are those latencies, or FLOPs with cost='flops'. A
    single-resolution model searched with progressive plans is calibrated on the deepest of them,
    so every lower resolution has its latency."""
    if opts.cost not in ("latency", "flops"):
        raise ConfigError(f"cost {opts.cost!r}: choose latency or flops")
    batch = min(opts.batch, opts.screen_num)
    bench_opts = BenchOptions(batch=batch, device=str(pipe.device))
    model_plan, lower = pipe.preset.stages, progressive_resolutions(pipe.preset, opts)
    plan = calibration_plan(progressive_plan(model_plan, lower[-1], "spectral", 1.5, 5, "dpmpp2m")
                            if lower else model_plan)
    time_sampling(pipe.fast, pipe.preset, bench_opts, stages=plan)
    timer = NetworkTimer(pipe.fast, pipe.device)
    total, _ = time_sampling(pipe.fast, pipe.preset, bench_opts, stages=plan, timer=timer)
    latency = {r: timer.seconds[r] / timer.calls[r] for r in timer.calls}
    overhead = max(total - sum(timer.seconds.values()), 0.0) / sum(timer.calls.values())
    weights = None
    if opts.cost == "flops":
        from ..info import flops_per_evaluation
        weights = flops_per_evaluation(pipe.preset, plan.resolutions)
    return CostModel(latency, batch, weights, overhead)


def cost_text(plan: StagePlan, costs: CostModel) -> str:
    return (f"effective NFE {costs.effective_nfe(plan)}, {costs.latency_per_image(plan) * 1e3:.3g} ms per image "
            "predicted")


def within_budget(stages, costs: CostModel, opts: TuneOptions) -> bool:
    if opts.budget_nfe is not None and costs.effective_nfe(stages) > opts.budget_nfe:
        return False
    return opts.budget_latency is None or costs.latency_per_image(stages) <= opts.budget_latency


# --- the search space: coordinates and their candidate values ----------------------------

ONE_EVAL_SOLVERS = ("dpmpp2m", "ipndm", "dpmpp3m", "euler")      # one evaluation per step: the few-step family


def _solver_moves(plan: StagePlan, i: int, solvers):
    converted = {s: plan.with_solver(s)[i] for s in solvers if s != plan[i].solver}
    return [(f"{plan[i].resolution}: solver {s}, steps {c.steps}", plan.replace(i, solver=s, steps=c.steps))
            for s, c in converted.items()]


def _steps_moves(plan: StagePlan, i: int):
    """The stage's schedule length; a truncated stage keeps its NFE (so its hand-over moves)."""
    s, final = plan[i], plan.is_final(i)
    out = []
    for d in ((-2, -1, 1, 2) if final else (-4, -2, -1, 1, 2, 4)):
        steps = s.steps + d
        if steps < (1 if final else 2):
            continue
        cand = plan.replace(i, steps=steps)
        if not final and s.nfe is not None:
            cand = cand.replace(i, nfe=min(s.nfe, cand.schedule_nfe(i)))
        out.append((f"{s.resolution}: steps {steps}", cand))
    return out


def _truncated_at(plan: StagePlan, i: int, n: int) -> StagePlan:
    """The plan with stage i truncated after n evaluations, its schedule grown when n would pass its end."""
    plan = plan.replace(i, nfe=n)
    while plan.schedule_nfe(i) < n:
        plan = plan.replace(i, steps=plan[i].steps + 1)
    return plan


def _nfe_moves(plan: StagePlan, i: int):
    """The truncation point of a low-resolution stage, in small and large moves; the schedule
    grows with it when the point would pass its end."""
    s = plan[i]
    current, out = plan.nfe(i), []
    for n in sorted({current - 2, current - 1, current + 1, current + 2, current // 2, (3 * current + 1) // 2}):
        if n >= 1 and n != current:
            out.append((f"{s.resolution}: truncate after {n} NFE", _truncated_at(plan, i, n)))
    return out


def _trade_moves(plan: StagePlan, i: int):
    """Final-stage steps against stage i's evaluations: one more final step for fewer low-resolution
    evaluations, or the reverse, at about the same cost."""
    last, s = len(plan) - 1, plan[i]
    out = []
    for d_final, d_low in ((1, -2), (-1, 2), (2, -4), (-2, 4)):
        steps, n = plan[last].steps + d_final, plan.nfe(i) + d_low
        if steps < 1 or n < 1:
            continue
        cand = _truncated_at(plan.replace(last, steps=steps), i, n)
        out.append((f"{plan[last].resolution}: steps {steps}, {s.resolution}: truncate after {n} NFE", cand))
    return out


def _sigma_max_moves(plan: StagePlan, i: int, high: float):
    s = plan[i]
    values = [round(v, 3) for v in (s.sigma_max * 0.7, s.sigma_max / 0.7) if 2 * s.sigma_min < v <= high]
    return [(f"{s.resolution}: sigma_max {v:g}", plan.replace(i, sigma_max=v)) for v in values]


def _sigma_min_moves(plan: StagePlan, i: int, low: float):
    s = plan[i]
    values = [round(v, 4) for v in (s.sigma_min / 2, s.sigma_min * 2) if low / 20 <= v < s.sigma_max / 2]
    return [(f"{s.resolution}: sigma_min {v:g}", plan.replace(i, sigma_min=v)) for v in values]


def _rho_moves(plan: StagePlan, i: int):
    s = plan[i]
    return [(f"{s.resolution}: rho {v:g}", plan.replace(i, rho=v)) for v in (s.rho - 2, s.rho + 2) if v >= 1]


WARM_SIGMAS = (1.0, 2.0, 3.0, 5.0)


def _warm_moves(plan: StagePlan, i: int, cold_sigma_max: float):
    """Stage i started from the stage below (at a few sigma_max, with its steps or one fewer), or,
    when it already is, from noise again at its model plan's sigma_max."""
    s = plan[i]
    if s.start == "upsampled":
        return [(f"{s.resolution}: start from noise", plan.replace(i, start="noise", sigma_max=cold_sigma_max))]
    out = []
    for sigma in WARM_SIGMAS:
        if 2 * s.sigma_min < sigma:
            for steps in sorted({s.steps, max(s.steps - 1, 1 if plan.is_final(i) else 2)}):
                out.append((f"{s.resolution}: start from the stage below at sigma {sigma:g}, steps {steps}",
                            plan.replace(i, start="upsampled", sigma_max=sigma, steps=steps)))
    return out


def _handover_moves(plan: StagePlan, i: int):
    """A progressive stage with the other hand-over, at the same switch."""
    return [(f"{plan[i].resolution}: {kind} hand-over", plan.replace(i, handover=kind))
            for kind in ("spectral", "plain") if kind != plan[i].handover]


SWITCH_FACTORS = (0.6, 0.8, 1 / 0.8, 1 / 0.6)


def _switch_moves(plan: StagePlan, i: int):
    """A progressive stage's switch sigma moved, the stage below then running its schedule to the
    switch divided by the upsampling factor (where a spectral hand-over adds no noise to the block means)."""
    s, factor = plan[i], plan[i].resolution // plan[i - 1].resolution
    out = []
    for v in (round(s.sigma_max * k, 3) for k in SWITCH_FACTORS):
        cand = plan.replace(i, sigma_max=v).replace(i - 1, sigma_min=round(v / factor, 4), nfe=None)
        out.append((f"{s.resolution}: switch at sigma {v:g}", cand))
    return out


def coordinates(plan: StagePlan, solvers, warm_start: bool = False,
                sampling_range: tuple[float, float] = EDM.sampling_range) -> list[tuple[str, Callable]]:
    """(name, plan -> [(move, plan)]) for plans shaped like `plan`, in search order: solvers,
    the final stage's steps, truncation points, trades of final steps against low-resolution
    evaluations, warm starts (a progressive plan: each stage's switch sigma and hand-over instead),
    sigma_max, the final stage's sigma_min, rho, then the low-resolution stages' steps. A
    single-resolution model has the same coordinates but those of the low-resolution stages; flow stages (which end at 0) have no sigma_min or rho
    to move, and their sigma_max only moves once warm-started. sigma_max and sigma_min move within
    the preconditioning's `sampling_range` (sigma_min down to a twentieth of its low end)."""
    last, (low, high) = len(plan) - 1, sampling_range
    edm = [i for i, s in enumerate(plan) if s.schedule == "edm"]
    coords = [(f"{s.resolution}:solver", lambda p, i=i: _solver_moves(p, i, solvers)) for i, s in enumerate(plan)]
    coords.append((f"{plan[last].resolution}:steps", lambda p: _steps_moves(p, last)))
    for i, s in enumerate(plan[:-1]):
        coords.append((f"{s.resolution}:nfe", lambda p, i=i: _nfe_moves(p, i)))
    for i, s in enumerate(plan[:-1]):
        coords.append((f"{s.resolution}:trade", lambda p, i=i: _trade_moves(p, i)))
    if plan.progressive:
        for i, s in enumerate(plan[1:], start=1):
            coords.append((f"{s.resolution}:switch", lambda p, i=i: _switch_moves(p, i)))
            coords.append((f"{s.resolution}:handover", lambda p, i=i: _handover_moves(p, i)))
    elif warm_start:
        for i, s in enumerate(plan[1:], start=1):
            coords.append((f"{s.resolution}:start", lambda p, i=i, cold=s.sigma_max: _warm_moves(p, i, cold)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:sigma_max", lambda p, i=i: _sigma_max_moves(p, i, high)))
    if last in edm:
        coords.append((f"{plan[last].resolution}:sigma_min", lambda p: _sigma_min_moves(p, last, low)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:rho", lambda p, i=i: _rho_moves(p, i)))
    for i, s in enumerate(plan[:-1]):
        coords.append((f"{s.resolution}:steps", lambda p, i=i: _steps_moves(p, i)))
    return coords


LADDER = (2, 3, 4, 6, 8)       # evaluations of the lowest stage in the few-step starts


def few_step_plans(plan: StagePlan, costs: CostModel, opts: TuneOptions) -> list[tuple[str, StagePlan]]:
    """Few-step starts: every stage with one one-evaluation solver; the lowest stage truncated after
    n in LADDER evaluations of an (n + 2)-step schedule, each middle stage after max(2, 2n/3), over
    the model plan's sigma ranges; the final stage takes as many steps as the budget leaves (a
    single-stage model: the most steps that fit)."""
    out = []
    for solver in (s for s in opts.solvers if s in ONE_EVAL_SOLVERS):
        base = plan.with_solver(solver)
        for n in (LADDER if len(plan) > 1 else (0,)):
            cand = base
            for i in range(len(plan) - 1):
                k = n if i == 0 else max(2, round(2 * n / 3))
                cand = cand.replace(i, nfe=k, steps=k + 2)
            fitting = (p for p in (cand.replace(len(plan) - 1, steps=k) for k in range(60, 0, -1))
                       if within_budget(p, costs, opts))
            best = next(fitting, None)
            if best is not None:
                out.append((f"few-step {solver} {'/'.join(map(str, best.nfe_per_stage.values()))}", best))
    return out


PROGRESSIVE_MODES = ("no", "also", "only")
PROGRESSIVE_SWITCHES = (1.5, 4.0)      # switch sigmas of the progressive starts, at the final resolution
PROGRESSIVE_EVALS = (3, 6)             # evaluations of the lowest stage in the progressive starts


def progressive_resolutions(preset, opts: TuneOptions) -> list[tuple[int, ...]]:
    """The lower resolutions of the progressive plans searched for a single-resolution model: one
    (R/2) and two (R/4, R/2) below its own, those its network runs at; none for a cascade or with
    progressive='no'."""
    if opts.progressive not in PROGRESSIVE_MODES:
        raise ConfigError(f"progressive {opts.progressive!r}: choose {', '.join(PROGRESSIVE_MODES)}")
    if opts.progressive == "no" or not preset.single_resolution:
        return []
    top = preset.resolutions[-1]
    return [lower for lower in ((top // 2,), (top // 4, top // 2)) if all(preset.network.runs_at(r) for r in lower)]


def progressive_plan(plan: StagePlan, lower: tuple[int, ...], handover: str, switch: float, evals: int,
                     solver: str) -> StagePlan:
    """A single-resolution `plan` run first at the `lower` resolutions, every stage with the
    one-evaluation `solver`: the final stage from the `switch` sigma down to its own sigma_min; each
    stage below runs its whole schedule down to the switch of the stage above divided by the
    upsampling factor (2), starting at the switch sigma doubled three times (the lowest from the
    plan's sigma_max) with `evals` evaluations for the lowest, two thirds of that for the others."""
    top = plan.with_solver(solver)[0]
    stages, sigma_max = [dataclasses.replace(top, sigma_max=switch, handover=handover)], switch
    for k, r in enumerate(reversed(lower)):
        lowest = k == len(lower) - 1
        start = top.sigma_max if lowest else min(8 * sigma_max, top.sigma_max)
        n = evals if lowest else max(2, round(2 * evals / 3))
        stages.insert(0, dataclasses.replace(top, resolution=r, sigma_max=start, sigma_min=sigma_max / 2, steps=n + 1,
                                             nfe=None, handover="none" if lowest else handover))
        sigma_max = start
    return StagePlan(stages)


def progressive_starts(plan: StagePlan, lower_sets, costs: CostModel, opts: TuneOptions) -> list[tuple[str, StagePlan]]:
    """Progressive starts: one lower resolution with either hand-over and each one-evaluation solver,
    two lower resolutions with the spectral hand-over and the first; each at the PROGRESSIVE_SWITCHES
    and PROGRESSIVE_EVALS, the final stage taking as many steps as the budget leaves."""
    solvers = [s for s in opts.solvers if s in ONE_EVAL_SOLVERS]
    out = []
    for lower in lower_sets:
        kinds, kinds_solvers = (("spectral", "plain"), solvers) if len(lower) == 1 else (("spectral",), solvers[:1])
        for handover in kinds:
            for solver in kinds_solvers:
                for switch in PROGRESSIVE_SWITCHES:
                    for evals in PROGRESSIVE_EVALS:
                        cand = progressive_plan(plan, lower, handover, switch, evals, solver)
                        last = len(cand) - 1
                        fitting = (p for p in (cand.replace(last, steps=k) for k in range(40, 0, -1))
                                   if within_budget(p, costs, opts))
                        best = next(fitting, None)
                        if best is not None:
                            out.append((f"progressive {handover} {solver} "
                                        f"{'/'.join(map(str, best.nfe_per_stage.values()))}, switch {switch:g}", best))
    return out


FITS = ("costliest stage first", "lower stages first", "in proportion")


def fit_budget(plan: StagePlan, costs: CostModel, opts: TuneOptions, order: str = FITS[0]) -> StagePlan:
    """Shrink the plan until it fits, one step (final stage) or one NFE (truncated stages) at a
    time, taking it from: the stage that costs most ('costliest stage first'); the truncated
    stages before the final one ('lower stages first'); or the stage that has kept the largest
    share of its own NFE ('in proportion')."""
    original = plan

    def shrinkable(i):
        return plan[i].steps > 1 if plan.is_final(i) else plan.nfe(i) > 1

    while not within_budget(plan, costs, opts):
        candidates = [i for i in range(len(plan)) if shrinkable(i)]
        if not candidates:
            raise ConfigError(f"the budget is smaller than the cheapest plan (one evaluation per stage: "
                              f"{cost_text(plan, costs)}); raise it")
        if order == FITS[0]:
            i = max(candidates, key=lambda i: plan.nfe(i) * costs.latency[plan[i].resolution])
        elif order == FITS[1]:
            lower = [i for i in candidates if not plan.is_final(i)]
            i = max(lower or candidates, key=lambda i: plan.nfe(i) * costs.latency[plan[i].resolution])
        else:
            i = max(candidates, key=lambda i: plan.nfe(i) / original.nfe(i))
        plan = (plan.replace(i, steps=plan[i].steps - 1) if plan.is_final(i) else plan.replace(i, nfe=plan.nfe(i) - 1))
    return plan


# --- the search ---------------------------------------------------------------------------

class Tuner:
    """The search. Under torchrun (`world`) every rank runs it in step: each FID's samples are
    shared by the ranks (`evaluate_pipeline`), and the cost model and FIDs are rank 0's, so
    every rank takes the same decisions and one process's plan comes out."""

    def __init__(self, pipe, ref, extractor, feature_space: str, opts: TuneOptions, progress=None,
                 world: World = SINGLE, start_plans: list[tuple[str, StagePlan]] = (), bar=None):
        for name, plan in start_plans:       # a plan for other resolutions fails here, not as a skipped trial
            try:
                pipe.preset.check_plan(plan)
            except ConfigError as e:
                raise ConfigError(f"start plan {name}: {e}") from None
        self.start_plans = list(start_plans)
        unknown = [s for s in opts.solvers if s not in SOLVERS]
        if unknown:      # else every plan using them fails check_plan and is skipped without a word
            raise ConfigError(f"unknown solver(s) {', '.join(unknown)}: choose from {', '.join(SOLVERS)}")
        if opts.screen_num < 2 or opts.confirm < 1 or opts.trials < 1:
            raise ConfigError("tune needs screen_num >= 2, confirm >= 1 and trials >= 1")
        self.pipe, self.extractor, self.feature_space = pipe, extractor, feature_space
        self.ref = reference_for(ref, extractor, feature_space, pipe.image_shape)   # before any work
        self.opts, self.progress, self.world, self.bar = opts, progress, world, bar
        self.costs = world.broadcast(measure_costs(pipe, opts) if world.is_main else None)
        self.trials: dict[str, Trial] = {}

    @property
    def screen_num(self) -> int:
        return min(self.opts.screen_num, self.opts.num)

    def _fid(self, stages: StagePlan, num: int):
        o = self.opts
        return evaluate_pipeline(self.pipe, self.ref, self.extractor, self.feature_space, num=num, seed=o.seed,
                                 stages=stages, batch=min(o.batch, num), progress=False, world=self.world,
                                 bar=self.bar)

    def evaluate(self, stages, move: str) -> Trial | None:
        """Screening FID of a plan (memoised); None when out of budget, invalid or out of trials."""
        key = _key(stages)
        if key in self.trials:
            return self.trials[key]
        if len(self.trials) >= self.opts.trials or not within_budget(stages, self.costs, self.opts):
            return None
        try:
            self.pipe.preset.check_plan(stages)
        except ConfigError:
            return None
        ev = self._fid(stages, self.screen_num)
        trial = Trial(stages, move, ev.fid, self.costs.effective_nfe(stages), self.costs.latency_per_image(stages),
                      ev.images_per_s, stages.nfe_per_stage)
        if self.screen_num == self.opts.num:
            trial.fid_confirmed = ev.fid
        self.trials[key] = trial
        if self.progress is not None and self.world.is_main:
            self.progress(trial, len(self.trials))
        return trial

    def starts(self) -> list[tuple[str, StagePlan]]:
        """The model's plan fitted to the budget in each of the FITS orders (one for a single-stage
        model), then the few-step plans (neither with progressive='only'), the progressive plans of a
        single-resolution model, then the given start plans fitted the same ways."""
        model_plan = self.pipe.preset.stages
        lower = progressive_resolutions(self.pipe.preset, self.opts)
        own = ([] if lower and self.opts.progressive == "only" else
               self._fitted("model plan", model_plan) + few_step_plans(model_plan, self.costs, self.opts))
        return (own + progressive_starts(model_plan, lower, self.costs, self.opts)
                + [start for name, plan in self.start_plans for start in self._fitted(name, plan)])

    def _fitted(self, name: str, plan: StagePlan) -> list[tuple[str, StagePlan]]:
        """`plan` fitted to the budget in each of the FITS orders, duplicates dropped."""
        fits = {}
        for order in FITS:
            fits.setdefault(_key(p := fit_budget(plan, self.costs, self.opts, order)), (order, p))
        return [(name if _key(p) == _key(plan) else f"{name} fitted, {order}", p) for order, p in fits.values()]

    def descend(self, best: Trial) -> Trial:
        """Coordinate descent from `best` until a pass brings nothing or the trials are spent."""
        coords = coordinates(best.stages, self.opts.solvers, self.opts.warm_start,
                             self.pipe.preset.precond.sampling_range)
        improved = True
        while improved and len(self.trials) < self.opts.trials:
            improved = False
            for _, moves_of in coords:
                found = [t for t in (self.evaluate(p, m) for m, p in moves_of(best.stages)) if t is not None]
                candidate = min(found, key=_rank, default=None)
                if candidate is not None and _rank(candidate) < _rank(best):
                    best, improved = candidate, True
                if len(self.trials) >= self.opts.trials:
                    break
        return best

    def confirm(self) -> list[Trial]:
        """The best screened plans evaluated on all num seeds, best first."""
        ranked = sorted(self.trials.values(), key=_rank)[:self.opts.confirm]
        for t in ranked:
            if t.fid_confirmed is None:
                t.fid_confirmed = self._fid(t.stages, self.opts.num).fid
        return sorted(ranked, key=lambda t: (t.fid_confirmed, t.effective_nfe))

    def run(self) -> Trial:
        """Screen the starts, and the best start with every solver at equal NFE; descend from the
        best; confirm the best screened plans on all seeds and return the lowest FID there."""
        evaluated = [t for t in (self.evaluate(p, m) for m, p in self.starts()) if t is not None]
        if not evaluated:
            raise ConfigError("no plan within the budget could be evaluated; raise the budget")
        start = min(evaluated, key=_rank).stages
        twins = [(f"all stages {s}", start.with_solver(s)) for s in self.opts.solvers]
        evaluated += [t for t in (self.evaluate(p, m) for m, p in twins) if t is not None]
        self.descend(min(evaluated, key=_rank))
        mark_pareto(list(self.trials.values()))
        return self.confirm()[0]


def save_tuned_plan(path, tuner: Tuner, chosen: Trial, checkpoint: str, **provenance) -> None:
    """The plan file `lowdiff tune` writes: the chosen plan's stages, then what was searched and
    measured (budget, cost model, seeds, FIDs, throughput; `provenance`: model, reference, ...)
    and the Pareto front of the screened plans."""
    o, trials = tuner.opts, list(tuner.trials.values())
    front = mark_pareto(trials)
    tuned = {"fid": chosen.fid_confirmed, "fid_screen": chosen.fid, "screen_num": tuner.screen_num,
             "effective_nfe": chosen.effective_nfe, "images_per_s": chosen.images_per_s,
             "latency_per_image_s": chosen.latency_per_image_s, "budget_nfe": o.budget_nfe,
             "budget_latency": o.budget_latency, "cost": o.cost, "num": o.num, "seeds": [o.seed, o.seed + o.num - 1],
             "trials": len(trials), **provenance,
             "cost_model": {"latency_s": tuner.costs.latency, "batch": tuner.costs.batch,
                            "step_overhead_s": tuner.costs.step_overhead}}
    chosen.stages.save(path, preset=tuner.pipe.preset.name, checkpoint=checkpoint, tuned=tuned,
                       pareto_front=[t.to_dict() for t in front])


def _rank(t: Trial) -> tuple[float, int]:
    """Lower FID first; at equal FID, the cheaper plan."""
    return t.fid, t.effective_nfe


def mark_pareto(trials: list[Trial]) -> list[Trial]:
    """Plans no other plan beats on both FID (lower) and throughput (higher)."""
    front = []
    for t in trials:
        t.pareto = not any(o.fid <= t.fid and o.images_per_s >= t.images_per_s and
                           (o.fid < t.fid or o.images_per_s > t.images_per_s) for o in trials)
        if t.pareto:
            front.append(t)
    return sorted(front, key=lambda t: -t.images_per_s)


def format_table(trials: list[Trial], chosen: Trial) -> str:
    rows = sorted(trials, key=lambda t: -t.images_per_s)
    lines = [f"{'':2}{'FID':>9}{'confirmed':>10}{'eff. NFE':>9}{'img/s':>9}{'predicted':>10}{'NFE per stage':>16}  "
             f"{'solvers':<24}{'move'}"]
    for t in rows:
        mark = ("*" if t is chosen else " ") + ("P" if t.pareto else " ")
        nfe = "/".join(str(v) for v in t.nfe.values())
        solvers = "/".join(s.solver for s in t.stages)
        confirmed = f"{t.fid_confirmed:>10.3f}" if t.fid_confirmed is not None else f"{'':>10}"
        lines.append(f"{mark}{t.fid:>9.3f}{confirmed}{t.effective_nfe:>9}{t.images_per_s:>9.2f}"
                     f"{1 / t.latency_per_image_s:>10.2f}{nfe:>16}  {solvers:<24}{t.move}")
    lines.append("FID on the screening seeds, confirmed = on all seeds; img/s measured, predicted by the cost model; "
                 "P = on the Pareto front (screening FID vs measured throughput), * = the chosen plan (lowest "
                 "confirmed FID within budget)")
    return "\n".join(lines)


def plot_front(trials: list[Trial], chosen: Trial, path: str | Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([t.images_per_s for t in trials], [t.fid for t in trials], s=14, c="0.6", label="evaluated plans")
    front = sorted((t for t in trials if t.pareto), key=lambda t: t.images_per_s)
    ax.plot([t.images_per_s for t in front], [t.fid for t in front], "o-", c="C0", ms=5, label="Pareto front")
    ax.scatter([chosen.images_per_s], [chosen.fid], marker="*", s=160, c="C3", zorder=3, label="chosen plan")
    ax.set_xlabel("throughput (images / s, measured)")
    ax.set_ylabel("FID")
    ax.set_title(title, fontsize=9)
    ax.ticklabel_format(useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format=Path(path).suffix[1:].lower() or "png"))
    plt.close(fig)
