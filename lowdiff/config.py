"""The configuration schema: `Preset` (a network, a stage plan, training settings, the
preconditioning) and its parts. The named presets are in lowdiff/presets.py; the network
configs belong to their networks (lowdiff/nn), the stage plan to lowdiff/diffusion/plan.py.
A preset serialises to the config.json of a model directory and back (`to_dict` /
`from_dict`, checked field by field).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .diffusion import consistency
from .diffusion.consistency import ConsistencyConfig
from .diffusion.denoiser import check_unified
from .diffusion.plan import StageConfig, StagePlan, progressive_on_cascade
from .diffusion.precond import EDM, Flow, Preconditioning, preconditioning_from
from .checks import MAX_BATCH, PRECISIONS, in_range
from .errors import ConfigError
from .fields import from_dict, jsonable
from .nn import NETWORKS, NetworkConfig
from .seeds import MAX_SEED

__all__ = ["ConfigError", "ConsistencyConfig", "LatentConfig", "Preset", "StageConfig", "StagePlan", "TrainConfig"]

WEIGHTS_SHA256 = "model_sha256"     # beside the preset in a model's config.json: the SHA-256 of its model.safetensors


@dataclass
class TrainConfig:
    """Training hyper-parameters (EDM train.py defaults; LowDiff trains 75% of the images)."""
    batch: int = 512
    batch_gpu: int = 0                       # per-device micro-batch, 0 = no accumulation
    lr: float = 1e-3
    lr_rampup_kimg: float = 10_000
    ema_halflife_kimg: float = 500
    ema_rampup_ratio: float | None = 0.05
    duration_kimg: float = 200_000
    xflip: bool = False                      # random horizontal flips of training images
    precision: str = "fp32"                  # one of PRECISIONS: fp32 | bf16 (autocast) | fp16 (+ loss scaling)
    compile: bool = False                    # torch.compile the network
    loss_weights: dict[int, float] = field(default_factory=dict)   # per resolution, default 1
    seed: int = 0
    log_kimg: float = 50                     # progress / loss log interval
    checkpoint_kimg: float = 2_500           # training-state checkpoint interval
    keep_checkpoints: int = 2
    adam_betas: tuple[float, float] = (0.9, 0.999)   # LightningDiT: (0.9, 0.95)

    def __post_init__(self):
        self.adam_betas = tuple(self.adam_betas)

    def validate(self) -> None:
        """Every number finite and in its meaningful range (a NaN or inf here would end in a traceback or a
        silently wrong run)."""
        in_range("train batch", self.batch, 1, MAX_BATCH, integer=True)
        in_range("train batch_gpu", self.batch_gpu, 0, MAX_BATCH, integer=True)
        in_range("train lr", self.lr, 0, math.inf)
        for name in ("lr_rampup_kimg", "ema_halflife_kimg"):
            in_range(f"train {name}", getattr(self, name), 0, 1e9)
        for name in ("duration_kimg", "log_kimg", "checkpoint_kimg"):
            in_range(f"train {name}", getattr(self, name), 1e-6, 1e9)
        if self.ema_rampup_ratio is not None:
            in_range("train ema_rampup_ratio", self.ema_rampup_ratio, 0, 1e6)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        in_range("train keep_checkpoints", self.keep_checkpoints, 1, 1000, integer=True)
        in_range("train seed", self.seed, 0, MAX_SEED, integer=True)
        for beta in self.adam_betas:
            in_range("train adam_betas", beta, 0, 0.999999)
        for r, w in self.loss_weights.items():
            in_range(f"train loss_weights[{r}]", w, 0, 1e6)


@dataclass
class LatentConfig:
    """How a latent-space preset's data relate to images (LightningDiT Sec. 4: latents normalised per channel).

    A VAE maps images of `image_resolution` to latents of the preset's img_resolution.
    Training data are normalised per resolution: z_n = (z - mean_r) / std_r * multiplier
    (`norm='channel'`, LightningDiT's per-channel statistics) or z_n = z * multiplier
    (`norm='scale'`, DiT's SD-VAE convention with multiplier 0.18215). `vae` and `stats`
    ({"16": {"mean": [...], "std": [...]}, ...}) are filled in from the latent dataset at
    training time, so a model directory decodes its samples on its own.
    """
    vae: str = ""                            # VAE directory (diffusers) or weight file
    image_resolution: int = 256
    image_channels: int = 3
    norm: str = "channel"                    # 'channel' | 'scale'
    multiplier: float = 1.0
    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class Preset:
    name: str
    description: str
    network: NetworkConfig                   # nn.UNetConfig or nn.DiTConfig
    stages: StagePlan                        # a list of StageConfig is converted
    train: TrainConfig = field(default_factory=TrainConfig)
    precond: Preconditioning = field(default_factory=EDM)   # a kind is converted ('edm', 'flow', ...)
    unified: bool = True                     # False = CDM, one independent network per stage
    cond_scaling: bool = True                # scale the condition by c_in(sigma_cond) (docs/architecture.md)
    data: str = ""                           # default dataset for `lowdiff train`
    baseline: str = ""                       # the single-resolution preset it is compared with
    paper: dict[str, Any] = field(default_factory=dict)   # the paper's figures, for reports
    class_names: list[str] = field(default_factory=list)  # recorded by the trainer, labels grids
    latent: LatentConfig | None = None       # latent-space presets: the VAE and normalisation
    consistency: ConsistencyConfig | None = None   # consistency tuning (training) / a tuned model (sampling)

    def __post_init__(self):
        self.stages = StagePlan.of(self.stages)
        self.precond = preconditioning_from(self.precond)

    @property
    def resolutions(self) -> list[int]:
        return self.stages.resolutions

    def validate(self) -> None:
        """Every part of the preset checked, once (`lowdiff train` calls it before the data are read;
        model directories when they load)."""
        self.precond = preconditioning_from(self.precond)      # a kind assigned after construction
        if self.consistency is not None:
            self.consistency.validate(self.resolutions, self.precond)
        self.check_plan(self.stages)
        if self.resolutions[-1] != self.network.img_resolution:
            raise ConfigError(f"the last stage ({self.resolutions[-1]}) must be the target resolution "
                              f"{self.network.img_resolution}")
        if self.unified:
            check_unified(self.network, self.resolutions)
        for r in self.train.loss_weights:
            if r not in self.resolutions:
                raise ConfigError(f"loss weight for resolution {r}, which is not a stage")
        if self.latent is not None and self.latent.norm not in ("channel", "scale"):
            raise ConfigError(f"latent norm {self.latent.norm!r}: choose channel or scale")
        self.network.validate()
        self.train.validate()
        label_dim = self.network.label_dim
        if self.class_names and len(self.class_names) != label_dim:
            raise ConfigError(f"class_names lists {len(self.class_names)} names, the network has {label_dim} classes "
                              "(label_dim); give one name per class")

    @property
    def single_resolution(self) -> bool:
        """One network at one resolution (a baseline): its plans may be progressive (lowdiff/diffusion/plan.py)."""
        return len(self.stages) == 1 and len(self.network.resolutions) == 1

    def check_plan(self, plan: StagePlan) -> None:
        """A stage plan must fit this model: the same resolutions, or for a single-resolution model a
        progressive plan ending at its resolution whose lower stages the network can run at; valid
        schedules."""
        if self.single_resolution and plan.resolutions[-1:] == self.resolutions:
            for r in plan.resolutions[:-1]:
                if not self.network.runs_at(r):
                    raise ConfigError(f"stage {r}: the network cannot run at {r}x{r}: "
                                      f"{self.network.lower_resolution_hint()}")
        elif plan.resolutions != self.stages.resolutions:
            progressive = [st for st in plan if st.handover != "none"]
            if progressive:
                raise progressive_on_cascade(progressive[0])
            raise ConfigError(f"the stage plan has resolutions {plan.resolutions}, the model "
                              f"{self.stages.resolutions}")
        plan.validate(self.precond, conditional=bool(self.network.label_dim),
                      single_resolution=self.single_resolution)
        consistency.check_plan(plan, self.consistency, self.name)

    # --- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = jsonable(self)
        d["network"] = {"arch": self.network.arch, **d["network"]}
        d["stages"] = self.stages.to_list()
        d["precond"] = self.precond.to_config()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "Preset":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
        d = copy.deepcopy(d)
        network = _network_from_dict(d.pop("network", None), f"{where}.network")
        stages = StagePlan.from_list(d.pop("stages", None), f"{where}.stages")
        train = d.pop("train", {})
        cosine = train.pop("cosine_loss", False) if isinstance(train, dict) else False
        train = from_dict(TrainConfig, train, f"{where}.train")
        latent = d.pop("latent", None)
        latent = from_dict(LatentConfig, latent, f"{where}.latent") if latent is not None else None
        precond = _with_cosine(preconditioning_from(d.pop("precond", "edm"), f"{where}.precond"), cosine, where)
        tuned = d.pop("consistency", None)
        tuned = from_dict(ConsistencyConfig, tuned, f"{where}.consistency") if tuned is not None else None
        return from_dict(cls, {**d, "network": network, "stages": stages, "train": train, "latent": latent,
                               "precond": precond, "consistency": tuned}, where, ignore=frozenset({WEIGHTS_SHA256}))

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(copy.deepcopy(self), **changes)


def _with_cosine(precond: Preconditioning, cosine, where: str) -> Preconditioning:
    """A config written when the flow loss's cosine term was a training setting (`train.cosine_loss`):
    the term now belongs to the flow preconditioning (`Flow.cosine`)."""
    if not cosine:
        return precond
    if cosine is not True:
        raise ConfigError(f"{where}.train.cosine_loss must be true or false, got {cosine!r}")
    if not isinstance(precond, Flow):
        raise ConfigError(f"{where}.train.cosine_loss belongs to the flow objective (precond 'flow'), the "
                          f"preconditioning is {precond.kind!r}")
    return dataclasses.replace(precond, cosine=True)


def _network_from_dict(d: Any, where: str) -> NetworkConfig:
    """A network config by its 'arch' (unet when absent). Files written before the configs
    were split hold the fields of both networks; the other network's fields are dropped."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected the network's fields, got {d!r}")
    d = dict(d)
    arch = d.pop("arch", "unet")
    if arch not in NETWORKS:
        raise ConfigError(f"{where}.arch {arch!r}: choose {', '.join(NETWORKS)}")
    cls = NETWORKS[arch][0]
    others = {f.name for c, _ in NETWORKS.values() for f in dataclasses.fields(c)} | {"dropout"}
    return from_dict(cls, d, where, ignore=frozenset(others - {f.name for f in dataclasses.fields(cls)}))
