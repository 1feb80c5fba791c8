"""`lowdiff tune`: search a trained model's stage plan for the lowest FID within a budget.

Any model can be tuned, a cascade or a single-resolution baseline, with the same search,
budget and cost model, so that both families are compared at their best.

The budget is an effective NFE (paper Appendix B: each stage's NFE weighted by its cost
per evaluation relative to the target resolution, measured latency or FLOPs) and/or a
predicted latency per image (the per-resolution evaluation latencies, measured once, times
the NFE). The search is coordinate descent (a pattern search): starting from the model's
own plan, and the same plan with every solver at equal NFE, it tries a few values of one
coordinate at a time (a stage's solver, steps, truncation NFE, sigma_max, sigma_min, rho),
keeps the best if FID improves (at equal FID, if the plan is cheaper), and cycles until a
whole pass brings nothing or the trials are spent. Every FID uses the same seeds (common
random numbers), so differences between plans are not sampling noise of the seed choice.
All evaluated plans form the FID / throughput Pareto front; throughput is measured while
generating.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..diffusion.plan import StageConfig, StagePlan
from ..diffusion.solvers import SOLVERS
from ..errors import ConfigError
from .bench import BenchOptions, time_evaluations
from .evaluate import check_reference, evaluate_pipeline


@dataclass
class TuneOptions:
    budget_nfe: float | None = None          # effective NFE at most
    budget_latency: float | None = None      # predicted seconds per image at most
    trials: int = 24                         # FID evaluations in all
    num: int = 500                           # samples per FID
    seed: int = 0                            # seeds seed .. seed + num - 1 for every plan
    batch: int = 250
    solvers: tuple[str, ...] = ("heun", "dpmpp2m")
    cost: str = "latency"                    # per-evaluation cost for effective NFE: latency | flops


@dataclass
class Trial:
    stages: StagePlan
    move: str                                # what changed from the plan it came from
    fid: float
    effective_nfe: int
    latency_per_image_s: float               # predicted from per-evaluation latencies
    images_per_s: float                      # measured while generating the FID samples
    nfe: dict[int, int] = field(default_factory=dict)
    pareto: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [_stage_summary(s) for s in self.stages]
        return d


def _stage_summary(s: StageConfig) -> dict:
    return {k: getattr(s, k) for k in ("resolution", "solver", "steps", "nfe", "sigma_min", "sigma_max", "rho")}


def _key(stages: StagePlan) -> str:
    return json.dumps([asdict(s) for s in stages], sort_keys=True, default=str)


class CostModel:
    """Effective NFE and predicted latency of a plan from per-resolution evaluation costs."""

    def __init__(self, latency: dict[int, float], batch: int, weights: dict[int, float] | None = None):
        self.latency, self.batch = latency, batch          # seconds per evaluation of `batch` images
        self.weights = weights or latency                   # what effective NFE weighs by

    def effective_nfe(self, plan: StagePlan) -> int:
        return plan.effective_nfe(self.weights)

    def latency_per_image(self, plan: StagePlan) -> float:
        return sum(n * self.latency[r] for r, n in plan.nfe_per_stage.items()) / self.batch


def measure_costs(pipe, opts: TuneOptions) -> CostModel:
    batch = min(opts.batch, opts.num)
    latency = time_evaluations(pipe.fast, pipe.preset, BenchOptions(batch=batch, device=str(pipe.device)))
    weights = None
    if opts.cost == "flops":
        from ..info import flops_per_evaluation
        weights = flops_per_evaluation(pipe.preset)
    elif opts.cost != "latency":
        raise ValueError(f"cost {opts.cost!r}: choose latency or flops")
    return CostModel(latency, batch, weights)


def within_budget(stages, costs: CostModel, opts: TuneOptions) -> bool:
    if opts.budget_nfe is not None and costs.effective_nfe(stages) > opts.budget_nfe:
        return False
    return opts.budget_latency is None or costs.latency_per_image(stages) <= opts.budget_latency


# --- the search space: coordinates and their candidate values ----------------------------

def _solver_moves(plan: StagePlan, i: int, solvers):
    converted = {s: plan.with_solver(s)[i] for s in solvers if s != plan[i].solver}
    return [(f"{plan[i].resolution}: solver {s}, steps {c.steps}", plan.replace(i, solver=s, steps=c.steps))
            for s, c in converted.items()]


def _steps_moves(plan: StagePlan, i: int):
    s, final = plan[i], plan.is_final(i)
    out = []
    for d in (-2, -1, 1, 2):
        steps = s.steps + d
        if steps < (1 if final else 2):
            continue
        cand = plan.replace(i, steps=steps)
        if not final and s.nfe is not None:
            cand = cand.replace(i, nfe=min(s.nfe, cand.schedule_nfe(i)))
        out.append((f"{s.resolution}: steps {steps}", cand))
    return out


def _nfe_moves(plan: StagePlan, i: int):
    s = plan[i]
    top, current = plan.schedule_nfe(i), plan.nfe(i)
    return [(f"{s.resolution}: truncate after {n} NFE", plan.replace(i, nfe=n))
            for n in (current - 2, current - 1, current + 1, current + 2) if 1 <= n <= top]


def _sigma_max_moves(plan: StagePlan, i: int):
    s = plan[i]
    values = [round(v, 3) for v in (s.sigma_max * 0.7, s.sigma_max / 0.7) if 2 * s.sigma_min < v <= 80]
    return [(f"{s.resolution}: sigma_max {v:g}", plan.replace(i, sigma_max=v)) for v in values]


def _sigma_min_moves(plan: StagePlan, i: int):
    s = plan[i]
    values = [round(v, 4) for v in (s.sigma_min / 2, s.sigma_min * 2) if 1e-4 <= v < s.sigma_max / 2]
    return [(f"{s.resolution}: sigma_min {v:g}", plan.replace(i, sigma_min=v)) for v in values]


def _rho_moves(plan: StagePlan, i: int):
    s = plan[i]
    return [(f"{s.resolution}: rho {v:g}", plan.replace(i, rho=v)) for v in (s.rho - 2, s.rho + 2) if v >= 1]


def coordinates(plan: StagePlan, solvers) -> list[tuple[str, Callable]]:
    """(name, plan -> [(move, plan)]) for plans shaped like `plan`, in search order: solvers,
    the final stage's steps, truncation points, sigma_max, the final stage's sigma_min, rho,
    then the low-resolution stages' steps. A single-resolution model has the same
    coordinates but truncation and low-resolution steps; flow stages (which start from pure
    noise and end at 0) have no sigma range or rho to move."""
    last = len(plan) - 1
    edm = [i for i, s in enumerate(plan) if s.schedule == "edm"]
    coords = [(f"{s.resolution}:solver", lambda p, i=i: _solver_moves(p, i, solvers)) for i, s in enumerate(plan)]
    coords.append((f"{plan[last].resolution}:steps", lambda p: _steps_moves(p, last)))
    for i, s in enumerate(plan[:-1]):
        coords.append((f"{s.resolution}:nfe", lambda p, i=i: _nfe_moves(p, i)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:sigma_max", lambda p, i=i: _sigma_max_moves(p, i)))
    if last in edm:
        coords.append((f"{plan[last].resolution}:sigma_min", lambda p: _sigma_min_moves(p, last)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:rho", lambda p, i=i: _rho_moves(p, i)))
    for i, s in enumerate(plan[:-1]):
        coords.append((f"{s.resolution}:steps", lambda p, i=i: _steps_moves(p, i)))
    return coords


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
            raise ConfigError("the budget is smaller than the cheapest plan (one evaluation per stage); raise it")
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
    def __init__(self, pipe, ref, extractor, feature_space: str, opts: TuneOptions, progress=None):
        unknown = [s for s in opts.solvers if s not in SOLVERS]
        if unknown:      # else every plan using them fails check_plan and is skipped without a word
            raise ConfigError(f"unknown solver(s) {', '.join(unknown)}: choose from {', '.join(SOLVERS)}")
        self.pipe, self.extractor, self.feature_space = pipe, extractor, feature_space
        self.ref = check_reference(ref, {**extractor.identity, "feature_space": feature_space})   # before any work
        self.opts, self.progress = opts, progress
        self.costs = measure_costs(pipe, opts)
        self.trials: dict[str, Trial] = {}

    def evaluate(self, stages, move: str) -> Trial | None:
        """FID of a plan (memoised); None when out of budget, invalid or out of trials."""
        key = _key(stages)
        if key in self.trials:
            return self.trials[key]
        if len(self.trials) >= self.opts.trials or not within_budget(stages, self.costs, self.opts):
            return None
        try:
            self.pipe.preset.check_plan(stages)
        except ConfigError:
            return None
        o = self.opts
        ev = evaluate_pipeline(self.pipe, self.ref, self.extractor, self.feature_space, num=o.num, seed=o.seed,
                               stages=stages, batch=min(o.batch, o.num), progress=False)
        trial = Trial(stages, move, ev.fid, self.costs.effective_nfe(stages), self.costs.latency_per_image(stages),
                      o.num / max(ev.generation_s, 1e-9), stages.nfe_per_stage)
        self.trials[key] = trial
        if self.progress is not None:
            self.progress(trial, len(self.trials))
        return trial

    def run(self) -> Trial:
        """Evaluate the model's plan fitted to the budget in each of the FITS orders (one start for a
        single-stage model), then the best of them with every solver at equal NFE, then descend."""
        model_plan = self.pipe.preset.stages
        fits = {}
        for order in FITS:
            fits.setdefault(_key(p := fit_budget(model_plan, self.costs, self.opts, order)), (order, p))
        starts = [("model plan" if _key(p) == _key(model_plan) else f"model plan fitted, {order}", p)
                  for order, p in fits.values()]
        evaluated = [t for t in (self.evaluate(p, m) for m, p in starts) if t is not None]
        if not evaluated:
            raise ConfigError("no plan within the budget could be evaluated; raise the budget or --trials")
        start = min(evaluated, key=_rank).stages
        twins = [(f"all stages {s}", start.with_solver(s)) for s in self.opts.solvers]
        evaluated += [t for t in (self.evaluate(p, m) for m, p in twins) if t is not None]
        best = min(evaluated, key=_rank)
        coords = coordinates(start, self.opts.solvers)
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
        mark_pareto(list(self.trials.values()))
        return min(self.trials.values(), key=_rank)


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
    lines = [f"{'':2}{'FID':>9}{'eff. NFE':>9}{'img/s':>9}{'NFE per stage':>16}  {'solvers':<24}{'move'}"]
    for t in rows:
        mark = ("*" if t is chosen else " ") + ("P" if t.pareto else " ")
        nfe = "/".join(str(v) for v in t.nfe.values())
        solvers = "/".join(s.solver for s in t.stages)
        lines.append(f"{mark}{t.fid:>9.3f}{t.effective_nfe:>9}{t.images_per_s:>9.2f}{nfe:>16}  {solvers:<24}{t.move}")
    lines.append("P = on the Pareto front (FID vs measured throughput), * = the chosen plan (lowest FID within budget)")
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
    fig.savefig(path)
    plt.close(fig)
