"""The plans `lowdiff tune` searches (lowdiff/eval/tune.py runs the search): the coordinates a
plan moves along with their candidate values, the few-step and progressive starts, and the short
plan the cost model is calibrated on."""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..diffusion.plan import BOUNDS, EDM_SCHEDULE, FLOW_SCHEDULE, StagePlan
from ..diffusion.precond import EDM, Preconditioning
from ..diffusion.solvers import SOLVERS, few_step_solvers, flow_solvers
from ..errors import ConfigError
from .tune_budget import PROGRESSIVE_MODES, CostModel, TuneOptions, within_budget


def calibration_plan(plan: StagePlan) -> StagePlan:
    """A short plan with every resolution evaluated a few times: DPM-Solver++(2M), 4 evaluations
    per truncated stage, 4 steps in the final one, unguided (the latency of one batch; the cost
    model counts a guided evaluation twice)."""
    cal = plan.with_solver("dpmpp2m")
    for i in range(len(cal)):
        cal = cal.replace(i, cfg_scale=1.0)
        cal = cal.replace(i, steps=4) if cal.is_final(i) else cal.replace(i, steps=max(cal[i].steps, 5), nfe=4)
    return cal


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
    last, s = plan.final, plan[i]
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


WARM_SIGMAS = (1.0, 2.0, 3.0, 5.0)       # the warm starts' sigma_max on EDM's schedule
WARM_FRACTIONS = (0.25, 0.5, 0.75)        # flow: of the way from the stage below's hand-over level to 1 (noise)


def _warm_sigmas(plan: StagePlan, i: int, flow: bool) -> tuple[float, ...]:
    """Where a warm start of stage i may begin: WARM_SIGMAS, or on the flow (sigma in [0, 1], where sigma = 1
    is pure noise and a warm start there keeps nothing of the stage below) between the noise level the stage
    below hands over and 1."""
    if not flow:
        return WARM_SIGMAS
    below = plan.truncation_sigma(i - 1)
    return tuple(v for v in (round(below + f * (1 - below), 3) for f in WARM_FRACTIONS) if below < v < 1)


def _warm_moves(plan: StagePlan, i: int, cold_sigma_max: float, flow: bool = False):
    """Stage i started from the stage below (at a few sigma_max, with its steps or one fewer), or,
    when it already is, from noise again at its model plan's sigma_max (1 on the flow)."""
    s = plan[i]
    if s.start == "upsampled":
        return [(f"{s.resolution}: start from noise", plan.replace(i, start="noise", sigma_max=cold_sigma_max))]
    out = []
    for sigma in _warm_sigmas(plan, i, flow):
        if 2 * s.sigma_min < sigma:
            for steps in sorted({s.steps, max(s.steps - 1, 1 if plan.is_final(i) else 2)}):
                out.append((f"{s.resolution}: start from the stage below at sigma {sigma:g}, steps {steps}",
                            plan.replace(i, start="upsampled", sigma_max=sigma, steps=steps)))
    return out


def _flow_sigma_max_moves(plan: StagePlan, i: int):
    """A warm-started flow stage's sigma_max, moved by the time t = 1 - sigma it skips (x 0.7 or / 0.7), above
    the noise level the stage below hands over; a flow stage from noise starts at 1."""
    s = plan[i]
    if s.start != "upsampled":
        return []
    below = plan.truncation_sigma(i - 1)
    values = [round(1 - (1 - s.sigma_max) * k, 3) for k in (0.7, 1 / 0.7)]
    return [(f"{s.resolution}: sigma_max {v:g}", plan.replace(i, sigma_max=v)) for v in values if below < v < 1]


CFG_STEP, CFG_FACTOR = 0.25, 1.5         # small (additive) and large (multiplicative) moves of a guidance scale
CFG_INTERVALS = {FLOW_SCHEDULE: (float("inf"), 0.9, 0.75, 0.6),       # cfg_sigma_max, the guidance interval's top
                 EDM_SCHEDULE: (float("inf"), 10.0, 5.0, 2.0)}


def _fitted_guidance(move: str, plan: StagePlan, i: int, fit):
    """A guidance move, fitted to the budget by `fit` (a guided evaluation costs two); none when the budget
    cannot pay for stage i's guidance."""
    if fit is None:
        return [(move, plan)]
    try:
        fitted = fit(plan)
    except ConfigError:
        return []
    if fitted[i].cfg_scale != plan[i].cfg_scale:
        return []
    return [(move if fitted == plan else f"{move}, fitted to the budget", fitted)]


def _cfg_scale_moves(plan: StagePlan, i: int, fit=None):
    """Stage i's classifier-free guidance scale w (Ho & Salimans 2022): w +- CFG_STEP, w x or / CFG_FACTOR,
    w + 1, and 1 (unguided: one evaluation instead of two); never below 1."""
    w, top = plan[i].cfg_scale, BOUNDS["cfg_scale"][1]
    values = sorted({round(v, 3) for v in (1.0, w - CFG_STEP, w + CFG_STEP, w * CFG_FACTOR, w / CFG_FACTOR, w + 1)
                     if 1 <= v <= top} - {w})
    return [m for v in values
            for m in _fitted_guidance(f"{plan[i].resolution}: cfg_scale {v:g}", plan.replace(i, cfg_scale=v), i, fit)]


def _cfg_interval_moves(plan: StagePlan, i: int, schedule: str, fit=None):
    """A guided stage's guidance interval, the noise levels <= cfg_sigma_max (Kynkaanniemi et al. 2024, as
    LightningDiT samples), over CFG_INTERVALS of the preconditioning's schedule; none for an unguided stage."""
    s = plan[i]
    if s.cfg_scale == 1:
        return []
    return [m for v in CFG_INTERVALS[schedule] if v != s.cfg_sigma_max
            for m in _fitted_guidance(f"{s.resolution}: cfg_sigma_max {v:g}", plan.replace(i, cfg_sigma_max=v), i,
                                      fit)]


def guidance_searched(preset, opts: TuneOptions) -> bool:
    """Whether the tuner moves the guidance scale and interval: `opts.guidance`, or by default (None) for a
    class-conditional model trained with label dropout (its null class learned) or whose plan guides
    already. Guidance needs a class-conditional model."""
    conditional = bool(preset.network.label_dim)
    if opts.guidance and not conditional:
        raise ConfigError(f"--tune-guidance: {preset.name} is unconditional; classifier-free guidance needs a "
                          "class-conditional model")
    if opts.guidance is not None:
        return opts.guidance
    return conditional and (preset.network.label_dropout > 0 or any(s.cfg_scale != 1 for s in preset.stages))


def searched_solvers(solvers, precond: Preconditioning) -> tuple[str, ...]:
    """The solvers `lowdiff tune` tries on a model of `precond`: all given, each valid on its ODE (before any
    work: else every plan with it is skipped without a word)."""
    if precond.schedule == FLOW_SCHEDULE:
        invalid = [s for s in solvers if s in SOLVERS and not SOLVERS[s].flow_ode]
        if invalid:
            raise ConfigError(f"--solvers {','.join(invalid)}: not valid on the flow ODE of this model; choose from "
                              f"{', '.join(flow_solvers())}")
    return tuple(solvers)


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


def coordinates(plan: StagePlan, solvers, warm_start: bool = False, precond: Preconditioning = EDM(),
                guidance: bool = False, fit: Callable[[StagePlan], StagePlan] | None = None
                ) -> list[tuple[str, Callable]]:
    """(name, plan -> [(move, plan)]) for plans shaped like `plan`, in search order: solvers (on a
    flow model those valid on the flow ODE), the final stage's steps, truncation points, trades of
    final steps against low-resolution evaluations, with `guidance` each stage's guidance scale and
    interval (each move fitted to the budget by `fit`), warm starts (a progressive plan: each stage's
    switch sigma and hand-over instead), sigma_max, the final stage's sigma_min, rho, then the
    low-resolution stages' steps. A single-resolution model has the same coordinates but those of the
    low-resolution stages; flow stages (which end at 0) have no sigma_min or rho to move, and their
    sigma_max only moves once warm-started. sigma_max and sigma_min move within the preconditioning's
    `sampling_range` (sigma_min down to a twentieth of its low end)."""
    last, (low, high), flow = plan.final, precond.sampling_range, precond.schedule == FLOW_SCHEDULE
    solvers = [s for s in solvers if not flow or SOLVERS[s].flow_ode]
    edm = [i for i, s in enumerate(plan) if s.schedule == EDM_SCHEDULE]
    coords = [(f"{s.resolution}:solver", lambda p, i=i: _solver_moves(p, i, solvers)) for i, s in enumerate(plan)]
    coords.append((f"{plan[last].resolution}:steps", lambda p: _steps_moves(p, last)))
    for i, s in enumerate(plan.lower):
        coords.append((f"{s.resolution}:nfe", lambda p, i=i: _nfe_moves(p, i)))
    for i, s in enumerate(plan.lower):
        coords.append((f"{s.resolution}:trade", lambda p, i=i: _trade_moves(p, i)))
    for i, s in enumerate(plan if guidance else []):
        coords.append((f"{s.resolution}:cfg_scale", lambda p, i=i: _cfg_scale_moves(p, i, fit)))
        coords.append((f"{s.resolution}:cfg_interval", lambda p, i=i: _cfg_interval_moves(p, i, precond.schedule, fit)))
    if plan.progressive:
        for i, s in enumerate(plan[1:], start=1):
            coords.append((f"{s.resolution}:switch", lambda p, i=i: _switch_moves(p, i)))
            coords.append((f"{s.resolution}:handover", lambda p, i=i: _handover_moves(p, i)))
    elif warm_start:
        for i, s in enumerate(plan[1:], start=1):
            cold = high if flow else s.sigma_max
            coords.append((f"{s.resolution}:start", lambda p, i=i, cold=cold: _warm_moves(p, i, cold, flow)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:sigma_max", lambda p, i=i: _sigma_max_moves(p, i, high)))
    for i, s in enumerate(plan[1:] if flow and warm_start and not plan.progressive else [], start=1):
        if s.schedule == FLOW_SCHEDULE:
            coords.append((f"{s.resolution}:sigma_max", lambda p, i=i: _flow_sigma_max_moves(p, i)))
    if last in edm:
        coords.append((f"{plan[last].resolution}:sigma_min", lambda p: _sigma_min_moves(p, last, low)))
    for i in edm:
        coords.append((f"{plan[i].resolution}:rho", lambda p, i=i: _rho_moves(p, i)))
    for i, s in enumerate(plan.lower):
        coords.append((f"{s.resolution}:steps", lambda p, i=i: _steps_moves(p, i)))
    return coords


LADDER = (2, 3, 4, 6, 8)       # evaluations of the lowest stage in the few-step starts


def few_step_plans(plan: StagePlan, costs: CostModel, opts: TuneOptions) -> list[tuple[str, StagePlan]]:
    """Few-step starts: every stage with one one-evaluation solver; the lowest stage truncated after
    n in LADDER evaluations of an (n + 2)-step schedule, each middle stage after max(2, 2n/3), over
    the model plan's sigma ranges; the final stage takes as many steps as the budget leaves (a
    single-stage model: the most steps that fit)."""
    out = []
    for solver in few_step_solvers(opts.solvers):
        base = plan.with_solver(solver)
        for n in (LADDER if len(plan) > 1 else (0,)):
            cand = base
            for i in range(plan.final):
                k = n if i == 0 else max(2, round(2 * n / 3))
                cand = cand.replace(i, nfe=k, steps=k + 2)
            fitting = (p for p in (cand.replace(plan.final, steps=k) for k in range(60, 0, -1))
                       if within_budget(p, costs, opts))
            best = next(fitting, None)
            if best is not None:
                out.append((f"few-step {solver} {'/'.join(map(str, best.nfe_per_stage.values()))}", best))
    return out


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
    solvers = few_step_solvers(opts.solvers)
    out = []
    for lower in lower_sets:
        kinds, kinds_solvers = (("spectral", "plain"), solvers) if len(lower) == 1 else (("spectral",), solvers[:1])
        for handover in kinds:
            for solver in kinds_solvers:
                for switch in PROGRESSIVE_SWITCHES:
                    for evals in PROGRESSIVE_EVALS:
                        cand = progressive_plan(plan, lower, handover, switch, evals, solver)
                        fitting = (p for p in (cand.replace(cand.final, steps=k) for k in range(40, 0, -1))
                                   if within_budget(p, costs, opts))
                        best = next(fitting, None)
                        if best is not None:
                            out.append((f"progressive {handover} {solver} "
                                        f"{'/'.join(map(str, best.nfe_per_stage.values()))}, switch {switch:g}", best))
    return out
