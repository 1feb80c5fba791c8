"""Named sampling plans that ship with a model directory, with the figures they were measured at.

A model directory may hold `plans.json` beside config.json:

    {"fid_noise": 0.2,                      # the FID's seed-to-seed spread at the model's best plan
     "plans": {"fast": {"description": "...", "stages": [StageConfig fields ...],
                        "figures": {"fid": 1.66, "samples": 2000, "images_per_s": 27.3, "device": "...", ...}},
               ...}}

The plan in config.json is always there under the name `config`. The default plan of a model
is the fastest plan whose FID lies within `fid_noise` of the best FID among the plans with
figures (so a plan is never preferred for an FID difference the seeds alone could make); a
model without measured plans samples with its config's plan. `lowdiff tune --save-as NAME`
adds a plan; `lowdiff sample --plan NAME` picks one; `lowdiff info MODEL` lists them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .diffusion.plan import StagePlan
from .errors import ConfigError
from .fields import from_dict, jsonable
from .files import read_json, write_json
from .storage import load_config, model_dir

PLANS_FILE = "plans.json"
CONFIG_PLAN = "config"            # the reserved name of config.json's own plan
DEFAULT_RULE = ("the fastest plan whose FID is within the model's recorded FID noise of its best FID "
                "(plans.json; the plan in config.json when the model has no measured plans)")


@dataclass
class Figures:
    """What a plan was measured at: FID on `samples` images and throughput on `device`."""
    fid: float
    samples: int
    images_per_s: float
    device: str
    batch: int | None = None
    seeds: str = ""
    feature_space: str = ""
    source: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.fid) and self.fid >= 0 and math.isfinite(self.images_per_s)
                and self.images_per_s > 0 and self.samples > 0):
            raise ConfigError(f"plan figures must be finite, FID >= 0, img/s > 0 and samples > 0; got FID {self.fid}, "
                              f"{self.images_per_s} img/s on {self.samples} samples")

    def text(self) -> str:
        return f"FID {self.fid:.2f} on {self.samples:,} samples, {self.images_per_s:.1f} img/s ({self.device})"


@dataclass
class NamedPlan:
    name: str
    stages: StagePlan
    description: str = ""
    figures: Figures | None = None

    def to_dict(self) -> dict:
        out = {"description": self.description, "stages": self.stages.to_list()}
        if self.figures is not None:
            out["figures"] = jsonable(self.figures)
        return out

    def summary(self) -> str:
        """One line: name, NFE per stage, effective-NFE-free description and figures."""
        nfe = "/".join(str(n) for n in self.stages.nfe_per_stage.values())
        measured = self.figures.text() if self.figures else "not measured"
        return f"{self.name} (NFE {nfe}; {measured})"


@dataclass
class ModelPlans:
    """A model's named plans (config.json's own under `config`) and the default among them."""
    plans: dict[str, NamedPlan]
    fid_noise: float = 0.0
    where: str = PLANS_FILE
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, directory: str | Path | None) -> "ModelPlans":
        """The plans of a model directory (`bundled:NAME`, a path or None for the default model)."""
        directory = model_dir(directory)
        config_stages = load_config(directory).stages
        plans = {CONFIG_PLAN: NamedPlan(CONFIG_PLAN, config_stages, "the plan in config.json")}
        path = directory / PLANS_FILE
        if not path.is_file():
            return cls(plans, where=str(path))
        data = _read_json(path)
        noise = data.get("fid_noise", 0.0)
        if not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise ConfigError(f"{path}: fid_noise must be a finite number >= 0, got {noise!r}")
        entries = data.get("plans")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: 'plans' must be an object of named plans")
        for name, entry in entries.items():
            plans[name] = _named_plan(name, entry, f"{path}: plan {name!r}")
        return cls(plans, float(noise), str(path), {k: v for k, v in data.items() if k not in ("fid_noise", "plans")})

    def measured(self) -> list[NamedPlan]:
        return [p for p in self.plans.values() if p.figures is not None]

    def default(self) -> NamedPlan:
        """The fastest plan within `fid_noise` of the best measured FID (see DEFAULT_RULE)."""
        measured = self.measured()
        if not measured:
            return self.plans[CONFIG_PLAN]
        best = min(p.figures.fid for p in measured)
        within = [p for p in measured if p.figures.fid <= best + self.fid_noise]
        return max(within, key=lambda p: p.figures.images_per_s)

    def get(self, name: str) -> NamedPlan:
        if name not in self.plans:
            raise ConfigError(f"no plan named {name!r}; this model's plans: {', '.join(self.plans)}")
        return self.plans[name]

    def add(self, plan: NamedPlan) -> None:
        if plan.name == CONFIG_PLAN:
            raise ConfigError(f"{CONFIG_PLAN!r} names the plan in config.json; choose another name")
        self.plans[plan.name] = plan

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / PLANS_FILE
        named = {n: p.to_dict() for n, p in self.plans.items() if n != CONFIG_PLAN}
        write_json(path, {"fid_noise": self.fid_noise, **self.extra, "plans": named})
        return path


def _read_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plans file is a JSON object with 'plans'")
    return data


def _named_plan(name: str, entry, where: str) -> NamedPlan:
    if not isinstance(entry, dict) or "stages" not in entry:
        raise ConfigError(f"{where}: needs a 'stages' list")
    unknown = set(entry) - {"description", "stages", "figures"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    figures = from_dict(Figures, entry["figures"], f"{where}: figures") if "figures" in entry else None
    return NamedPlan(name, StagePlan.from_list(entry["stages"], where), str(entry.get("description", "")), figures)
