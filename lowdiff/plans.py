"""Named sampling plans that ship with a model directory, with the figures they were measured at.

A model directory may hold `plans.json` beside config.json:

    {"fid_noise": 0.2,                      # the FID's seed-to-seed spread at the model's best plan
     "plans": {"fast": {"description": "...", "stages": [StageConfig fields ...],
                        "figures": {"fid": 1.66, "samples": 2000, "images_per_s": 27.3, "device": "...", ...}},
               ...}}

The plan in config.json is always there under the name `config`. The default plan of a model
is the fastest plan whose FID lies within `fid_noise` of the best FID among the plans with
figures measured the same way (the largest group with equal feature space, samples, seeds,
device and batch: img/s of one CPU thread and of a GPU are not compared), so a plan is never
preferred for an FID difference the seeds alone could make; a model without measured plans
samples with its config's plan. plans.json records the SHA-256 of the weights its figures were
measured on: weights changed since (a run trained further) keep the plans but drop their
figures. `lowdiff tune --save-as NAME` adds a plan; `lowdiff sample --plan NAME` picks one;
`lowdiff info MODEL` lists them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .diffusion.plan import StagePlan
from .errors import ConfigError
from .fields import from_dict, jsonable
from .files import read_json, write_json
from .storage import CONFIG_FILE, model_dir, read_config

PLANS_FILE = "plans.json"
CONFIG_PLAN = "config"            # the reserved name of config.json's own plan
DEFAULT_RULE = ("the fastest plan whose FID is within the model's recorded FID noise of its best FID, among "
                "plans measured the same way (plans.json; the plan in config.json when the model has no measured "
                "plans)")
SHORT_RULE = "the fastest plan within the FID noise ({noise:.3f}) of the best measured FID"


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

    def protocol(self) -> tuple:
        """What must be equal for two plans' figures to be compared."""
        return self.feature_space, self.samples, self.seeds, self.device, self.batch


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
        """One line: name, NFE per stage and the figures."""
        nfe = "/".join(str(n) for n in self.stages.nfe_per_stage.values())
        measured = self.figures.text() if self.figures else "not measured"
        return f"{self.name} (NFE {nfe}; {measured})"


@dataclass
class ModelPlans:
    """A model's named plans (config.json's own under `config`) and the default among them."""
    plans: dict[str, NamedPlan]
    fid_noise: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_config(cls, stages: StagePlan) -> "ModelPlans":
        """Only the plan in config.json."""
        return cls({CONFIG_PLAN: NamedPlan(CONFIG_PLAN, stages, "the plan in config.json")})

    @classmethod
    def read(cls, directory: str | Path | None, config: tuple | None = None) -> "ModelPlans":
        """The plans of a model directory (`bundled:NAME`, a path or None for the default model),
        each checked against the model; `config`: its `read_config` when the caller has read it."""
        directory = model_dir(directory)
        preset, weights_sha256 = config or read_config(directory)
        out = cls.of_config(preset.stages)
        path = directory / PLANS_FILE
        if not path.is_file():
            return out
        data = _read_json(path)
        noise = data.get("fid_noise", 0.0)
        if not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise ConfigError(f"{path}: fid_noise must be a finite number >= 0, got {noise!r}")
        entries = data.get("plans")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: 'plans' must be an object of named plans")
        stale = data.get("model_sha256") not in (None, weights_sha256)
        if stale:
            warnings.warn(f"{path}: its figures were measured on other weights (the model was trained further or "
                          "replaced); its plans are kept without figures, so the default is config.json's plan")
        for name, entry in entries.items():
            out.add(_named_plan(name, entry, f"{path}: plan {name!r}", preset, stale))
        out.fid_noise = float(noise)
        out.extra = {k: v for k, v in data.items() if k not in ("fid_noise", "plans", "model_sha256")}
        return out

    def measured(self) -> list[NamedPlan]:
        return [p for p in self.plans.values() if p.figures is not None]

    def comparable(self) -> list[NamedPlan]:
        """The largest group of plans measured the same way (ties: the group holding the best FID)."""
        groups: dict[tuple, list[NamedPlan]] = {}
        for p in self.measured():
            groups.setdefault(p.figures.protocol(), []).append(p)
        if not groups:
            return []
        return max(groups.values(), key=lambda g: (len(g), -min(p.figures.fid for p in g)))

    def default(self) -> NamedPlan:
        """The fastest plan within `fid_noise` of the best measured FID (see DEFAULT_RULE)."""
        measured = self.comparable()
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
        """plans.json of a model directory, with the SHA-256 of the weights its figures belong to."""
        path = Path(directory) / PLANS_FILE
        named = {n: p.to_dict() for n, p in self.plans.items() if n != CONFIG_PLAN}
        weights = read_config(directory)[1] if (Path(directory) / CONFIG_FILE).is_file() else None   # none yet
        write_json(path, {"fid_noise": self.fid_noise, "model_sha256": weights, **self.extra, "plans": named})
        return path


def _read_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plans file is a JSON object with 'plans'")
    return data


def _named_plan(name: str, entry, where: str, preset, stale: bool) -> NamedPlan:
    """One entry of plans.json, checked against the model's `preset`; without figures when `stale`."""
    if name == CONFIG_PLAN:
        raise ConfigError(f"{where}: {CONFIG_PLAN!r} is reserved for config.json's plan; rename it")
    if not isinstance(entry, dict) or "stages" not in entry:
        raise ConfigError(f"{where}: needs a 'stages' list")
    unknown = set(entry) - {"description", "stages", "figures"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    stages = StagePlan.from_list(entry["stages"], where)
    try:
        preset.check_plan(stages)
    except ConfigError as e:
        raise ConfigError(f"{where} does not fit this model: {e}") from None
    figures = from_dict(Figures, entry["figures"], f"{where}: figures") if "figures" in entry and not stale else None
    return NamedPlan(name, stages, str(entry.get("description", "")), figures)
