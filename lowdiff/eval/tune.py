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
   evaluations, a class-conditional model's guidance scale and interval per stage, sigma_max,
   sigma_min, rho, and the warm start of a stage from the one below with its sigma), keeping
   the best move if the FID improves, until a pass brings nothing or the trials are spent;
3. every plan above is screened on the first `screen_num` seeds; the best `confirm` are
   evaluated again on all `num` seeds and the lowest FID there is chosen.
Every FID uses the same seeds (common random numbers: the screening seeds are the first
of the confirmation seeds), so differences between plans are not sampling noise of the
seed choice. All screened plans form the FID / throughput Pareto front; throughput is
measured while generating.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..diffusion.plan import StageConfig, StagePlan
from ..diffusion.solvers import SOLVERS
from ..distributed import SINGLE, World
from ..errors import ConfigError
from ..files import atomic_write
from .bench import BenchOptions, NetworkTimer, time_sampling
from .evaluate import checked_reference, evaluate_pipeline
from .tune_budget import COSTS, FITS, CostModel, TuneOptions, fit_budget, within_budget
from .tune_space import (calibration_plan, coordinates, few_step_plans, guidance_searched, progressive_plan,
                         progressive_resolutions, progressive_starts, searched_solvers)


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
                                       "cfg_scale", "cfg_sigma_max", "start", "handover")}


def _key(stages: StagePlan) -> str:
    return json.dumps([asdict(s) for s in stages], sort_keys=True, default=str)


def measure_costs(pipe, opts: TuneOptions) -> CostModel:
    """Time a calibration run (after one warm-up) at the screening batch size, inside and outside
    the network (`NetworkTimer`); weights are those latencies, or FLOPs with cost='flops'. A
    single-resolution model searched with progressive plans is calibrated on the deepest of them,
    so every lower resolution has its latency."""
    if opts.cost not in COSTS:
        raise ConfigError(f"cost {opts.cost!r}: choose {' or '.join(COSTS)}")
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


# --- the search ---------------------------------------------------------------------------

class Tuner:
    """The search. Under torchrun (`world`) every rank runs it in step: each FID's samples are
    shared by the ranks (`evaluate_pipeline`), and the cost model and FIDs are rank 0's, so
    every rank takes the same decisions and one process's plan comes out."""

    def __init__(self, pipe, ref, extractor, feature_space: str, opts: TuneOptions, progress=None,
                 world: World = SINGLE, start_plans: list[tuple[str, StagePlan]] = (), bar=None):
        for name, plan in start_plans:       # a plan for other resolutions fails here, not as a skipped trial
            try:
                pipe.plan(plan)
            except ConfigError as e:
                raise ConfigError(f"start plan {name}: {e}") from None
        self.start_plans = list(start_plans)
        unknown = [s for s in opts.solvers if s not in SOLVERS]
        if unknown:      # else every plan using them fails check_plan and is skipped without a word
            raise ConfigError(f"unknown solver(s) {', '.join(unknown)}: choose from {', '.join(SOLVERS)}")
        searched_solvers(opts.solvers, pipe.preset.precond)
        self.guidance = guidance_searched(pipe.preset, opts)
        if opts.screen_num < 2 or opts.confirm < 1 or opts.trials < 1:
            raise ConfigError("tune needs screen_num >= 2, confirm >= 1 and trials >= 1")
        self.pipe, self.extractor, self.feature_space = pipe, extractor, feature_space
        self.ref = checked_reference(ref, extractor, feature_space, pipe.image_shape)   # before any work
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
            self.pipe.plan(stages)           # checked against the model (once: sampling it does not check again)
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
        """The given start plans (`--start`) fitted to the budget in each of the FITS orders, first: a
        search of few --trials must not spend them all before reaching what was asked for; then the
        model's plan fitted the same ways (one way for a single-stage model), the few-step plans
        (neither with progressive='only') and the progressive plans of a single-resolution model."""
        model_plan = self.pipe.preset.stages
        lower = progressive_resolutions(self.pipe.preset, self.opts)
        own = ([] if lower and self.opts.progressive == "only" else
               self._fitted("model plan", model_plan) + few_step_plans(model_plan, self.costs, self.opts))
        return ([start for name, plan in self.start_plans for start in self._fitted(name, plan)]
                + own + progressive_starts(model_plan, lower, self.costs, self.opts))

    def _fitted(self, name: str, plan: StagePlan) -> list[tuple[str, StagePlan]]:
        """`plan` fitted to the budget in each of the FITS orders, duplicates dropped."""
        fits = {}
        for order in FITS:
            fits.setdefault(_key(p := fit_budget(plan, self.costs, self.opts, order)), (order, p))
        return [(name if _key(p) == _key(plan) else f"{name} fitted, {order}", p) for order, p in fits.values()]

    def descend(self, best: Trial) -> Trial:
        """Coordinate descent from `best` until a pass brings nothing or the trials are spent."""
        coords = coordinates(best.stages, self.opts.solvers, self.opts.warm_start, self.pipe.preset.precond,
                             self.guidance, fit=lambda p: fit_budget(p, self.costs, self.opts))
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
