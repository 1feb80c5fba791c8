"""The stage plan: which resolutions a cascade samples at, and how (paper Sec. 3.4, Alg. 2,
Appendix C). This module owns every fact about a plan: which stage is final, a stage's
sigma array, its NFE, where it stops (its truncation sigma), validation, edits (solver
switches, `RES:key=value` overrides) and the JSON of plan files.

A stage follows its schedule of noise levels (EDM's rho-schedule, or the shifted flow grid)
from sigma_max towards sigma_min. A non-final stage stops after `nfe` network evaluations
(the truncation point); the noisy state there, at its truncation sigma, conditions the next
stage. The final stage runs to the end of its schedule: sigma = 0.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..fields import convert, from_dict, jsonable
from ..files import read_json, write_json
from .precond import EDM, Preconditioning
from .schedules import edm_sigmas, flow_sigmas
from .solvers import SOLVERS, flow_solvers


@dataclass
class StageConfig:
    """One stage of the cascade: `steps` noise levels in [sigma_min, sigma_max].

    `schedule='edm'`: EDM's rho-schedule; a final stage appends sigma = 0.
    `schedule='flow'` (rectified-flow models): the noise level is sigma = 1 - t of the linear
    path x = (1 - sigma) y + sigma n (t = 1 data, LightningDiT's convention), and the grid is
    LightningDiT's: `steps` + 1 uniform times mapped by the timestep shift
    t' = s t / (1 + (s - 1) t) (`shift` = s; LightningDiT samples with 0.3), chosen so that
    the shifted grid runs from sigma_max to sigma_min; a final flow stage ends at sigma_min = 0.
    `cfg_scale` w guides with D_u + w (D_c - D_u) at noise levels <= `cfg_sigma_max` (the
    guidance interval; LightningDiT's cfg_interval_start t0 is cfg_sigma_max = 1 - t0).
    `start='upsampled'` (a warm start, not in the paper, off by default): a stage above the lowest
    starts at its sigma_max not from pure noise but from the stage below's output, upsampled and
    re-noised to sigma_max (lowdiff/diffusion/cascade.py, `warm_start`); it still conditions on
    that output as usual. Its sigma_max must lie above the noise level the stage below hands over.
    `handover` marks a progressive plan of a single-resolution model (training-free, not in the
    paper): the same network runs the noisy start of the trajectory at one or two lower resolutions,
    and each stage above the lowest continues the stage below's state, upsampled and re-noised to
    its sigma_max (the switch sigma), with no condition. 'plain' adds fresh white noise; 'spectral'
    adds noise that completes the upsampled image's spectrum, so the state has the white noise of
    its resolution (lowdiff/diffusion/cascade.py, `handover`). 'none' (the default): a cascade
    stage, or a progressive plan's lowest stage.
    """
    resolution: int
    steps: int = 18
    nfe: int | None = None          # truncation budget of a non-final stage; None = the whole schedule
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"            # a name in lowdiff.diffusion.solvers.SOLVERS
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0
    schedule: str = "edm"           # 'edm' (rho-schedule) | 'flow' (uniform in t, shifted)
    shift: float = 1.0              # flow schedule: timestep shift s (1 = none)
    cfg_scale: float = 1.0          # classifier-free guidance scale w (1 = unguided)
    cfg_sigma_max: float = float("inf")   # guide only at noise levels <= this
    start: str = "noise"            # 'noise' | 'upsampled': warm start from the stage below (see below)
    handover: str = "none"          # 'none' | 'plain' | 'spectral': a progressive stage (see below)


FIELDS = tuple(f.name for f in dataclasses.fields(StageConfig))
EDM_SCHEDULE, FLOW_SCHEDULE = "edm", "flow"      # the schedule kinds (a preconditioning names its own)
SCHEDULES = (EDM_SCHEDULE, FLOW_SCHEDULE)
STARTS = ("noise", "upsampled")
HANDOVERS = ("none", "plain", "spectral")


def stage_sigmas(stage: StageConfig, final: bool) -> torch.Tensor:
    """The stage's noise levels (float64): where its solver steps."""
    if stage.schedule == FLOW_SCHEDULE:
        return flow_sigmas(stage.steps, stage.sigma_min, stage.sigma_max, stage.shift)
    return edm_sigmas(stage.steps, stage.sigma_min, stage.sigma_max, stage.rho, append_zero=final)


def effective_nfe(nfe: dict[int, int], step_cost: dict[int, float]) -> int:
    """Paper Appendix B: sum_r NFE_r * cost_r / cost_R over stages, rounded up, where cost is
    the per-evaluation latency (or any cost measure) at each resolution, R the top one."""
    top = max(nfe)
    return math.ceil(sum(n * step_cost[r] / step_cost[top] for r, n in nfe.items()) - 1e-9)


class StagePlan(Sequence):
    """An immutable sequence of `StageConfig`, lowest resolution first. Edits return new plans."""

    def __init__(self, stages: Iterable[StageConfig]):
        self._stages = tuple(copy.deepcopy(s) for s in stages)

    @classmethod
    def of(cls, stages: "StagePlan | Iterable[StageConfig]") -> "StagePlan":
        """The one door from a list of stages to a plan: a plan as it is, a list converted."""
        return stages if isinstance(stages, StagePlan) else cls(stages)

    # --- the sequence --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._stages)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._stages[index])
        return self._stages[index]

    def __eq__(self, other) -> bool:
        return isinstance(other, (StagePlan, list, tuple)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"StagePlan({list(self._stages)!r})"

    def __deepcopy__(self, memo) -> "StagePlan":
        return StagePlan(self._stages)

    @property
    def resolutions(self) -> list[int]:
        return [s.resolution for s in self._stages]

    @property
    def top(self) -> int:
        return self._stages[-1].resolution

    def index(self, resolution: int) -> int:
        for i, s in enumerate(self._stages):
            if s.resolution == resolution:
                return i
        raise ConfigError(f"no stage at resolution {resolution}; the plan has {self.resolutions}")

    def is_final(self, i: int) -> bool:
        return i % len(self) == self.final

    @property
    def final(self) -> int:
        """The index of the final stage, the one that runs to sigma = 0."""
        return len(self) - 1

    @property
    def lower(self) -> list[StageConfig]:
        """The stages below the final one (a cascade's truncated stages, a progressive plan's lower ones)."""
        return list(self._stages[:-1])

    @property
    def progressive(self) -> bool:
        """A progressive plan (a single-resolution model at lower resolutions first): some stage has a handover."""
        return any(s.handover != "none" for s in self._stages)

    # --- schedules and costs -------------------------------------------------------------
    def sigmas(self, i: int) -> torch.Tensor:
        if self[i].steps < 1:
            raise ConfigError(f"stage {self[i].resolution}: steps must be >= 1, got {self[i].steps}")
        return stage_sigmas(self[i], self.is_final(i))

    def solver(self, i: int):
        """Stage i's solver (lowdiff.diffusion.solvers.Solver)."""
        if self[i].solver not in SOLVERS:
            raise ConfigError(f"stage {self[i].resolution}: solver {self[i].solver!r}, choose {', '.join(SOLVERS)}")
        return SOLVERS[self[i].solver]

    def schedule_nfe(self, i: int) -> int:
        """Evaluations of stage i's whole schedule, by its solver's cost."""
        return self.solver(i).nfe(self.sigmas(i))

    def budget(self, i: int) -> int | None:
        """The solver's evaluation budget: the truncation point, None for the final stage."""
        return None if self.is_final(i) else self[i].nfe

    def nfe(self, i: int) -> int:
        """Evaluations stage i spends: its truncation budget, else its whole schedule."""
        budget = self.budget(i)
        return self.schedule_nfe(i) if budget is None else budget

    @property
    def nfe_per_stage(self) -> dict[int, int]:
        return {s.resolution: self.nfe(i) for i, s in enumerate(self._stages)}

    def guided_nfe(self, i: int) -> int:
        """Evaluations of stage i that classifier-free guidance doubles (lowdiff/diffusion/guidance.py: the
        conditional and the unconditional half as one batch of twice the images): those at noise levels
        <= cfg_sigma_max when cfg_scale != 1, found by running the solver on a stand-in denoiser."""
        s = self[i]
        if s.cfg_scale == 1:
            return 0
        levels = []

        def record(x, sigma):
            levels.append(float(sigma))
            return torch.zeros_like(x)

        self.solver(i)(record, torch.zeros(1, device="cpu"), self.sigmas(i), max_nfe=self.budget(i),
                       S_churn=s.S_churn, S_min=s.S_min, S_max=s.S_max, S_noise=s.S_noise, noise_fn=torch.zeros_like)
        return sum(level <= s.cfg_sigma_max for level in levels)

    def evaluation_cost(self, i: int) -> int:
        """Stage i's evaluations counted at one batch each: a guided evaluation counts twice."""
        return self.nfe(i) + self.guided_nfe(i)

    @property
    def cost_per_stage(self) -> dict[int, int]:
        return {s.resolution: self.evaluation_cost(i) for i, s in enumerate(self._stages)}

    @property
    def total_nfe(self) -> int:
        return sum(self.nfe_per_stage.values())

    def truncation_sigma(self, i: int) -> float:
        """The noise level at which stage i hands over (where its schedule ends for the final stage)."""
        _, _, reached = self.solver(i)(lambda x, s: torch.zeros_like(x), torch.zeros(1, device="cpu"), self.sigmas(i),
                                       max_nfe=self.budget(i))
        return reached

    def effective_nfe(self, step_cost: dict[int, float]) -> int:
        """Appendix B's effective NFE, a guided evaluation (a doubled batch) counted twice (`cost_per_stage`)."""
        return effective_nfe(self.cost_per_stage, step_cost)

    # --- validation ----------------------------------------------------------------------
    def validate(self, precond: Preconditioning | None = None, conditional: bool = False,
                 single_resolution: bool = False) -> None:
        """Check every stage: resolutions doubling, schedules, truncation points, solvers, warm
        starts, hand-overs, against the model's preconditioning (default EDM's; Flow for
        rectified-flow models); `conditional` whether guidance can work; `single_resolution`
        whether the model is one network at one resolution (a plan of several stages is then
        progressive, else a cascade's)."""
        precond = precond or EDM()
        if not self._stages:
            raise ConfigError("a stage plan needs at least one stage")
        for lo, hi in zip(self.resolutions, self.resolutions[1:]):
            if hi != 2 * lo:
                raise ConfigError(f"stage resolutions must double from one stage to the next, got {lo} -> {hi}")
        for i, s in enumerate(self._stages):
            if s.handover not in HANDOVERS:
                raise ConfigError(f"stage {s.resolution}: handover {s.handover!r}, choose {', '.join(HANDOVERS)}")
            if single_resolution and len(self) > 1:
                self._validate_progressive(i, precond)
            elif s.handover != "none":
                raise progressive_on_cascade(s)
            self._validate_stage(i, s, precond, conditional)

    def _validate_stage(self, i: int, s: StageConfig, precond: Preconditioning, conditional: bool) -> None:
        where, final = f"stage {s.resolution}", self.is_final(i)
        _validate_numbers(s)
        _validate_sigma_span(s, precond)
        self.solver(i)
        if s.schedule not in SCHEDULES:
            raise ConfigError(f"{where}: schedule {s.schedule!r}, choose {' or '.join(SCHEDULES)}")
        if s.start not in STARTS:
            raise ConfigError(f"{where}: start {s.start!r}, choose {' or '.join(STARTS)}")
        if precond.schedule == FLOW_SCHEDULE or s.schedule != EDM_SCHEDULE:
            _validate_flow_stage(s, final, precond.schedule)
        elif s.steps < 1 or not (0 < s.sigma_min < s.sigma_max):
            raise ConfigError(f"{where}: need steps >= 1 and 0 < sigma_min < sigma_max")
        if s.cfg_scale != 1 and not conditional:
            raise ConfigError(f"{where}: cfg_scale needs a class-conditional model")
        _validate_guidance_interval(s, precond)
        if s.schedule == EDM_SCHEDULE and s.shift != 1:
            raise ConfigError(f"{where}: shift belongs to the flow schedule (schedule=flow); "
                              "the edm schedule is shaped by rho")
        if not final and s.steps < 2:
            raise ConfigError(f"{where}: a truncated stage needs steps >= 2")
        if s.start == "upsampled":
            self._validate_warm_start(i, precond)
        if s.nfe is not None:
            full = self.schedule_nfe(i)
            if final and s.nfe != full:
                raise ConfigError(f"final {where}: it runs to sigma=0, its NFE is {full}; change steps instead of nfe")
            if not final and not 1 <= s.nfe <= full:
                raise ConfigError(f"{where}: truncation after {s.nfe} NFE is past the last step of its "
                                  f"{s.steps}-step schedule ({full} NFE); raise steps or lower nfe")

    def _validate_progressive(self, i: int, precond: Preconditioning) -> None:
        """A progressive plan's stage: the lowest starts from noise; each above continues the one below
        by its handover, at a switch sigma (its sigma_max) in the sampling range, no higher than the
        stage below's sigma_max, and high enough for the handover: above the noise level the stage
        below hands over (plain), or at least the upsampling factor times it (spectral: the block
        means of white noise at sigma have noise sigma / factor, `cascade.handover`)."""
        s, where = self[i], f"stage {self[i].resolution}"
        if i == 0:
            if s.handover != "none":
                raise ConfigError(f"{where}: the lowest stage of a progressive plan starts from noise; handover "
                                  "belongs to the stages above it (set handover=none)")
            return
        if s.handover == "none":
            raise ConfigError(f"{where}: a progressive plan's stage above the lowest continues the stage below: "
                              "set handover=plain or handover=spectral")
        if s.start != "noise":
            raise ConfigError(f"{where}: start={s.start} is a cascade's warm start; a progressive stage starts from "
                              "the stage below by its handover (leave start=noise)")
        if precond.schedule == FLOW_SCHEDULE or s.schedule != EDM_SCHEDULE:
            raise ConfigError(f"{where}: progressive plans sample EDM-schedule models (schedule=edm)")
        self._check_switch_sigma(i, precond, "the switch")
        below = self[i - 1]
        if s.sigma_max > below.sigma_max:
            raise ConfigError(f"{where}: the switch sigma_max {s.sigma_max:g} is above the sigma_max of stage "
                              f"{below.resolution} ({below.sigma_max:g}); noise only falls along a plan")
        reached = self.truncation_sigma(i - 1)
        factor = s.resolution // below.resolution
        need = factor * reached if s.handover == "spectral" else reached
        if s.sigma_max < need * (1 - 1e-9) or (s.handover == "plain" and s.sigma_max <= reached):
            relation = (f">= {factor} x {reached:.4g} (the upsampling factor times" if s.handover == "spectral"
                        else f"> {reached:.4g} (")
            raise ConfigError(f"{where}: handover={s.handover} at sigma_max {s.sigma_max:g} needs sigma_max "
                              f"{relation} the noise level where stage {below.resolution} stops); raise sigma_max "
                              f"or run stage {below.resolution} further (nfe, sigma_min)")

    def _check_switch_sigma(self, i: int, precond: Preconditioning, what: str) -> None:
        s, (low, high) = self[i], precond.sampling_range
        if not low < s.sigma_max <= high:
            raise ConfigError(f"stage {s.resolution}: {what} at sigma_max {s.sigma_max:g} is outside the noise "
                              f"levels of the {precond.kind} preconditioning ({low:g}, {high:g}]")

    def _validate_warm_start(self, i: int, precond: Preconditioning) -> None:
        s = self[i]
        self._check_switch_sigma(i, precond, "a warm start")
        if i == 0:
            raise ConfigError(f"stage {s.resolution}: start=upsampled needs a stage below to start from; the lowest "
                              "stage starts from noise")
        below = self.truncation_sigma(i - 1)
        if not s.sigma_max > below:
            raise ConfigError(f"stage {s.resolution}: a warm start at sigma_max {s.sigma_max:g} must lie above the "
                              f"noise level the {self[i - 1].resolution}x{self[i - 1].resolution} stage hands over "
                              f"({below:.4g}); raise sigma_max or truncate stage {self[i - 1].resolution} later")

    # --- edits ---------------------------------------------------------------------------
    def replace(self, i: int, **changes) -> "StagePlan":
        """The plan with stage i's fields changed."""
        stages = list(self._stages)
        stages[i] = dataclasses.replace(stages[i], **changes)
        return StagePlan(stages)

    def with_solver(self, solver: str) -> "StagePlan":
        """Every stage with `solver`, at an unchanged NFE: the schedule gets the fewest steps
        whose full length costs at least as many evaluations as before (a Heun step costs two,
        so N Heun steps become 2N - 1 steps of a one-evaluation solver over the same sigma
        range); the truncation budget `nfe` is kept."""
        if solver not in SOLVERS:
            raise ConfigError(f"solver {solver!r}: choose {', '.join(SOLVERS)}")
        plan = self
        for i in range(len(self)):
            target = self.schedule_nfe(i)
            plan = plan.replace(i, solver=solver, steps=1 if self.is_final(i) else 2)
            while plan.schedule_nfe(i) < target:
                plan = plan.replace(i, steps=plan[i].steps + 1)
        return plan

    def with_guidance(self, scales: float | Sequence[float], sigma_max: float) -> "StagePlan":
        """Stage i guided with scales[i] (one number: every stage; a short list: its last scale for the
        stages above) at noise levels <= sigma_max (LightningDiT's guidance interval); a stage at
        scale 1 is unguided, without an interval."""
        scales = [scales] if isinstance(scales, (int, float)) else list(scales)
        plan = self
        for i in range(len(self)):
            w = scales[min(i, len(scales) - 1)]
            plan = plan.replace(i, cfg_scale=w, cfg_sigma_max=sigma_max if w != 1 else float("inf"))
        return plan

    def override(self, overrides: Iterable[str]) -> "StagePlan":
        """Apply 'RES:key=value[,key=value]' overrides, e.g. '16:nfe=13,sigma_max=50'. A RES below the
        top that the plan lacks adds a stage there, a copy of the stage above it (how a progressive
        plan is written on the command line: '--stage 16:... --stage 32:handover=spectral,...')."""
        plan = self
        keys = [f for f in FIELDS if f != "resolution"]
        hints = {f.name: f.type for f in dataclasses.fields(StageConfig)}
        for text in overrides:
            res_text, _, assignments = text.partition(":")
            if not res_text.isdigit() or not 0 < int(res_text) <= plan.top or not assignments:
                raise ConfigError(f"stage override {text!r}: expected RES:key=value with RES one of "
                                  f"{plan.resolutions}, or a lower resolution to add a stage")
            if int(res_text) not in plan.resolutions:
                plan = plan._with_stage(int(res_text))
            i = plan.index(int(res_text))
            for item in assignments.split(","):
                key, _, value = item.partition("=")
                if key not in keys or not value:
                    raise ConfigError(f"stage override {item!r}: keys are {', '.join(keys)}")
                plan = plan.replace(i, **{key: _parse_value(key, value, hints[key], text)})
        return plan

    def _with_stage(self, resolution: int) -> "StagePlan":
        """The plan with a stage added at `resolution`: a copy of the stage above it, starting from noise."""
        above = next(s for s in self._stages if s.resolution > resolution)
        added = dataclasses.replace(above, resolution=resolution, start="noise", handover="none")
        return StagePlan(sorted([*self._stages, added], key=lambda s: s.resolution))

    # --- JSON ----------------------------------------------------------------------------
    def to_list(self) -> list[dict]:
        return [jsonable(s) for s in self._stages]

    @classmethod
    def from_list(cls, rows, where: str = "stage plan") -> "StagePlan":
        if not isinstance(rows, list) or not rows:
            raise ConfigError(f"{where}: 'stages' must be a non-empty list of stages")
        return cls(from_dict(StageConfig, row, f"{where}: stage {i}") for i, row in enumerate(rows))

    def save(self, path: str | Path, **info) -> None:
        """Write a plan file (`lowdiff sample --plan FILE`) atomically: {"stages": [StageConfig fields], **info},
        `info` keys among PLAN_FILE_KEYS (what `lowdiff tune` records of its search)."""
        unknown = sorted(set(info) - set(PLAN_FILE_KEYS))
        if unknown:
            raise ValueError(f"plan files have no key(s) {', '.join(unknown)}; add them to PLAN_FILE_KEYS")
        write_json(path, {"stages": self.to_list(), **jsonable(info)})

    @classmethod
    def load(cls, path: str | Path) -> "StagePlan":
        """Read a plan file: {"stages": [...], ...} (only PLAN_FILE_KEYS) or a bare list of stages."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: {'a directory, not a plan file' if path.is_dir() else 'no such plan file'}")
        data = read_json(path)
        if isinstance(data, dict):
            if "stages" not in data:
                raise ConfigError(f"{path}: a plan file needs a 'stages' list")
            unknown = sorted(set(data) - {"stages", *PLAN_FILE_KEYS})
            if unknown:
                raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; a plan file holds 'stages' and "
                                  f"what `lowdiff tune` records ({', '.join(PLAN_FILE_KEYS)})")
            data = data["stages"]
        return cls.from_list(data, str(path))


PLAN_FILE_KEYS = ("preset", "checkpoint", "tuned", "pareto_front")   # beside "stages": the record of `lowdiff tune`


def progressive_on_cascade(s: StageConfig) -> ConfigError:
    """The error for a handover (a progressive plan's field) in a cascade model's plan."""
    return ConfigError(f"stage {s.resolution}: handover={s.handover} makes a progressive plan, which samples a "
                       "single-resolution model; this model is a cascade, whose stages start from the stage below "
                       "with start=upsampled: drop handover")


MAX_STEPS = 10_000          # schedule length: far beyond any sampler's (EDM's 1000-step ablations)
FINITE_FIELDS = ("sigma_min", "sigma_max", "rho", "S_churn", "S_min", "S_noise", "shift", "cfg_scale")
# Beyond these the float arithmetic of the schedules and solvers breaks (rho: sigma^(1/rho) under- or overflows;
# S_noise, cfg_scale: the noise or the guided output overflows float32) long before any sampler could use them.
BOUNDS = {"rho": (0.1, 1000.0), "S_noise": (0.0, 10.0), "cfg_scale": (0.0, 1000.0), "shift": (1e-3, 1000.0)}
SIGMA_SPAN = 1000.0         # how far outside its preconditioning's sampling range an EDM-schedule sigma may lie


def _validate_numbers(s: StageConfig) -> None:
    """Every number of a stage finite (S_max and cfg_sigma_max may be inf: no upper limit) and in its range."""
    where = f"stage {s.resolution}"
    for name in FINITE_FIELDS:
        value = getattr(s, name)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {value}")
    for name in ("S_max", "cfg_sigma_max"):
        if math.isnan(getattr(s, name)):
            raise ConfigError(f"{where}: {name} must be a number (inf for no limit), got nan")
    if not 1 <= s.steps <= MAX_STEPS:
        raise ConfigError(f"{where}: steps must be in [1, {MAX_STEPS:,}], got {s.steps}")
    if s.nfe is not None and not 1 <= s.nfe <= 2 * MAX_STEPS:
        raise ConfigError(f"{where}: nfe must be in [1, {2 * MAX_STEPS:,}], got {s.nfe}")
    for name in ("S_churn", "S_min", "S_noise", "cfg_scale"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{where}: {name} must be >= 0, got {getattr(s, name):g}")
    for name, (low, high) in BOUNDS.items():
        if not low <= getattr(s, name) <= high:
            raise ConfigError(f"{where}: {name} must be in [{low:g}, {high:g}], got {getattr(s, name):g}")


def far_outside(s: StageConfig, precond: Preconditioning) -> bool:
    """An EDM-schedule stage whose sigma range lies far outside the preconditioning's sampling range, but
    within what can be sampled (`_validate_sigma_span`): worth a warning, not an error."""
    low, high = precond.sampling_range
    return (s.schedule == EDM_SCHEDULE and 0 < s.sigma_min < s.sigma_max < float("inf")
            and (s.sigma_max > 6 * high or s.sigma_min < low / 200)
            and s.sigma_max <= high * SIGMA_SPAN and s.sigma_min >= low / SIGMA_SPAN)


def _validate_sigma_span(s: StageConfig, precond: Preconditioning) -> None:
    """EDM-schedule noise levels within SIGMA_SPAN of the preconditioning's sampling range (far outside it
    already warns; beyond, float32 overflows: sigma_max = 1e308)."""
    low, high = precond.sampling_range
    if s.schedule != EDM_SCHEDULE or precond.schedule == FLOW_SCHEDULE:
        return
    if s.sigma_max > high * SIGMA_SPAN or 0 < s.sigma_min < low / SIGMA_SPAN:
        raise ConfigError(f"stage {s.resolution}: sigma range [{s.sigma_min:g}, {s.sigma_max:g}] lies beyond what "
                          f"the {precond.kind} preconditioning can sample ([{low / SIGMA_SPAN:g}, "
                          f"{high * SIGMA_SPAN:g}]; its models sample [{low:g}, {high:g}])")


def _validate_guidance_interval(s: StageConfig, precond: Preconditioning) -> None:
    """cfg_sigma_max, the top of the guidance interval, is a noise level of the preconditioning: in [0, 1]
    on the flow (sigma = 1 - t), in [0, its sampling range's top] otherwise; inf guides at every level."""
    high = precond.sampling_range[1]
    if s.cfg_sigma_max != float("inf") and not 0 <= s.cfg_sigma_max <= high:
        raise ConfigError(f"stage {s.resolution}: cfg_sigma_max {s.cfg_sigma_max:g} is outside the noise levels of "
                          f"the {precond.kind} preconditioning [0, {high:g}] (inf: guide at every level)")


def _validate_flow_stage(s: StageConfig, final: bool, schedule: str) -> None:
    """Flow noise levels live in [0, 1] (sigma = 1 - t); the ODE solvers only, no churn."""
    where = f"stage {s.resolution}"
    if schedule != FLOW_SCHEDULE:                 # the preconditioning's schedule
        raise ConfigError(f"{where}: the flow schedule needs a flow model (precond 'flow')")
    if s.S_churn or not SOLVERS[s.solver].flow_ode:
        raise ConfigError(f"{where}: a flow model samples with an ODE solver valid on the flow ODE "
                          f"({', '.join(flow_solvers())}) and no churn; got solver {s.solver}, S_churn {s.S_churn:g}")
    if s.steps < 1 or not 0 <= s.sigma_min < s.sigma_max <= 1 or (s.schedule == EDM_SCHEDULE and s.sigma_min == 0):
        raise ConfigError(f"{where}: flow noise levels need steps >= 1 and 0 <= sigma_min < sigma_max <= 1")
    if s.sigma_max != 1 and s.start != "upsampled":
        raise ConfigError(f"{where}: a flow stage starts from pure noise (t = 0), so sigma_max must be 1 unless it "
                          "starts from the stage below (start=upsampled); move the first steps with shift instead")
    if s.schedule == FLOW_SCHEDULE and (s.shift <= 0 or (final and s.sigma_min != 0)):
        raise ConfigError(f"{where}: a flow schedule needs shift > 0, and the final stage sigma_min = 0")


def _parse_value(key: str, text: str, hint, override: str):
    """A `--stage` value as its field's type; 'none' clears nfe."""
    if hint in ("int | None", int | None) and text.lower() == "none":
        return None
    try:
        if "int" in str(hint):
            return convert(int(text), int, key)
        if "float" in str(hint):
            return float(text)
    except ValueError:
        kind = "an integer" if "int" in str(hint) else "a number"
        raise ConfigError(f"stage override {override!r}: {key} takes {kind}, got {text!r}") from None
    return text
