"""Configuration dataclasses and the named presets.

This module is the one place where the paper's settings live (LowDiff paper Tables 2-9,
Appendix C; EDM Table 7 / train.py for the baselines). Baselines and ablations are
presets, never code forks: EDM = one stage, CDM = `unified=False`, two- vs three-stage =
another stage list. `lowdiff presets` lists them, `lowdiff info NAME` prints one.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class NetworkConfig:
    """SongUNet (DDPM++) hyper-parameters, EDM's names, plus LowDiff's resolution set.
    With `arch='dit'` the network is the LightningDiT-style transformer (lowdiff/nn/dit.py):
    img_resolution is then the latent size, in_channels the latent channels, label_dropout
    the class dropout for classifier-free guidance, and the fields from hidden_size to rope
    set its shape; the U-Net fields (model_channels ... eps) are unused."""
    img_resolution: int = 32                 # host (target) resolution R
    in_channels: int = 3                     # image channels (the condition adds as many)
    out_channels: int = 3
    label_dim: int = 0                       # number of classes, 0 = unconditional
    augment_dim: int = 0                     # augmentation labels (EDM: 9 when augment is on)
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    channel_mult_emb: int = 4
    channel_mult_noise: int = 1
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.10
    label_dropout: float = 0.0
    eps: float = 1e-6                        # GroupNorm epsilon
    resolutions: tuple[int, ...] = (32,)     # resolutions this network generates at
    base_resolution: int = 0                 # lowest cascade resolution (unconditional); 0 = min(resolutions)
    cond_noise_embedding: bool = True        # embed the condition's noise level (DESIGN 1.1)
    arch: str = "unet"                       # 'unet' (SongUNet) | 'dit' (LightningDiT-style transformer)
    hidden_size: int = 768                   # DiT: token width D
    depth: int = 12                          # DiT: number of blocks
    num_heads: int = 12                      # DiT: attention heads
    patch_size: int = 1                      # DiT: patch side p (tokens = (r / p)^2)
    mlp_ratio: float = 4.0                   # DiT: SwiGLU hidden = int(2/3 * mlp_ratio * D)
    qk_norm: bool = False                    # DiT: RMSNorm on queries and keys
    rope: bool = True                        # DiT: 2-D rotary position embedding in attention

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        self.resolutions = tuple(sorted(self.resolutions))
        if not self.base_resolution and self.resolutions:
            self.base_resolution = min(self.resolutions)

    def validate(self) -> None:
        if self.arch not in ("unet", "dit"):
            raise ConfigError(f"arch {self.arch!r}: choose unet or dit")
        if self.arch == "dit":
            return self._validate_dit()
        R = self.img_resolution
        lowest = R >> (len(self.channel_mult) - 1)
        for r in self.resolutions:
            if not _is_pow2(r):
                raise ConfigError(f"resolution {r} is not a power of two; use e.g. 8, 16, 32, 64")
            if r > R or r < lowest:
                raise ConfigError(f"resolution {r} is outside the U-Net's levels {R}..{lowest}; "
                                  "change channel_mult or the resolutions")
        if not _is_pow2(R):
            raise ConfigError(f"img_resolution {R} is not a power of two")
        if self.base_resolution > min(self.resolutions):
            raise ConfigError("base_resolution must be <= the lowest served resolution")

    def _validate_dit(self) -> None:
        D, heads = self.hidden_size, self.num_heads
        if D % heads or D % 4 or (self.rope and (D // heads) % 4):
            raise ConfigError(f"hidden_size {D} must be divisible by 4 and by num_heads {heads}, and the head "
                              "dimension by 4 (2-D RoPE rotates pairs along two axes)")
        for r in self.resolutions:
            if r % self.patch_size or r > self.img_resolution:
                raise ConfigError(f"resolution {r} must be a multiple of patch_size {self.patch_size} and at most "
                                  f"img_resolution {self.img_resolution}")
        if self.base_resolution > min(self.resolutions):
            raise ConfigError("base_resolution must be <= the lowest served resolution")


@dataclass
class StageConfig:
    """One stage of the cascade (paper Sec. 3.4, Alg. 2, Appendix C).

    The stage follows EDM's rho-schedule of `steps` noise levels in [sigma_min, sigma_max].
    A non-final stage stops after `nfe` network evaluations ("truncation point"); the
    noisy state there conditions the next stage. The final stage runs to sigma = 0.

    `schedule='flow'` (rectified-flow models, lowdiff/diffusion/flow.py): the noise level is
    sigma = 1 - t of the linear path x = (1 - sigma) y + sigma n (t = 1 data, LightningDiT's
    convention), and the grid is LightningDiT's: `steps` + 1 uniform times mapped by the
    timestep shift t' = s t / (1 + (s - 1) t) (`shift` = s; LightningDiT samples with 0.3),
    the uniform times chosen so that the shifted grid runs from sigma_max to sigma_min. A final flow stage ends at sigma_min = 0.
    `cfg_scale` w guides with D_u + w (D_c - D_u) at noise levels <= `cfg_sigma_max` (the
    guidance interval; LightningDiT's cfg_interval_start t0 is cfg_sigma_max = 1 - t0).
    """
    resolution: int
    steps: int = 18
    nfe: int | None = None          # truncation budget; None = the whole schedule
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"            # 'heun' | 'euler' | 'dpmpp2m' (DPM-Solver++(2M), 1 NFE per step)
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0
    schedule: str = "edm"           # 'edm' (rho-schedule) | 'flow' (uniform in t, shifted)
    shift: float = 1.0              # flow schedule: timestep shift s (1 = none)
    cfg_scale: float = 1.0          # classifier-free guidance scale w (1 = unguided)
    cfg_sigma_max: float = float("inf")   # guide only at noise levels <= this

    def schedule_nfe(self, final: bool) -> int:
        """NFE of the whole schedule. A final stage appends sigma=0 and reaches it with an
        Euler step (EDM: 2N-1 for Heun); a truncated stage's schedule ends at sigma_min.
        A flow schedule has `steps` intervals whatever the stage; none evaluates sigma = 0."""
        per_step = 2 if self.solver == "heun" else 1
        if self.schedule == "flow":
            return per_step * self.steps - (1 if self.solver == "heun" and self.sigma_min == 0 else 0)
        if final:
            return per_step * self.steps - (1 if self.solver == "heun" else 0)
        return per_step * (self.steps - 1)

    def planned_nfe(self, final: bool) -> int:
        return self.schedule_nfe(final) if (final or self.nfe is None) else self.nfe


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
    precision: str = "fp32"                  # fp32 | bf16 (autocast) | fp16 (autocast + loss scaling)
    compile: bool = False                    # torch.compile the network
    loss_weights: dict[int, float] = field(default_factory=dict)   # per resolution, default 1
    seed: int = 0
    log_kimg: float = 50                     # progress / loss log interval
    checkpoint_kimg: float = 2_500           # training-state checkpoint interval
    keep_checkpoints: int = 2
    adam_betas: tuple[float, float] = (0.9, 0.999)   # LightningDiT: (0.9, 0.95)
    cosine_loss: bool = False                # flow objective: add 1 - cos(v, u) over channels (LightningDiT)

    def __post_init__(self):
        self.adam_betas = tuple(self.adam_betas)


@dataclass
class LatentConfig:
    """How a latent-space preset's data relate to images (spec lightningdit 2.3, 4).

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
    network: NetworkConfig
    stages: list[StageConfig]
    train: TrainConfig = field(default_factory=TrainConfig)
    precond: str = "vp"                      # 'vp' | 've' | 'edm' | 'flow' (rectified flow, lowdiff/diffusion/flow.py)
    unified: bool = True                     # False = CDM, one independent network per stage
    cond_scaling: bool = True                # scale the condition by c_in(sigma_cond) (DESIGN 1.2)
    data: str = ""                           # default dataset for `lowdiff train`
    baseline: str = ""                       # the single-resolution preset it is compared with
    paper: dict[str, Any] = field(default_factory=dict)   # the paper's figures, for reports
    class_names: list[str] = field(default_factory=list)  # set from the training data, labels grids
    latent: LatentConfig | None = None       # latent-space presets: the VAE and normalisation

    @property
    def resolutions(self) -> list[int]:
        return [s.resolution for s in self.stages]

    @property
    def objective(self) -> str:
        """'flow' (velocity on the linear path) or 'edm' (denoiser with EDM's loss)."""
        return "flow" if self.precond == "flow" else "edm"

    def validate(self) -> None:
        from .diffusion.solvers import SOLVERS
        if self.precond not in ("vp", "ve", "edm", "flow"):
            raise ConfigError(f"precond {self.precond!r}: choose vp, ve, edm or flow")
        if not self.stages:
            raise ConfigError("a preset needs at least one stage")
        res = self.resolutions
        if res[-1] != self.network.img_resolution:
            raise ConfigError(f"the last stage ({res[-1]}) must be the target resolution "
                              f"{self.network.img_resolution}")
        for lo, hi in zip(res, res[1:]):
            if hi != 2 * lo:
                raise ConfigError(f"stage resolutions must double from one stage to the next, got {lo} -> {hi}")
        if self.unified and tuple(res) != tuple(self.network.resolutions):
            raise ConfigError(f"network resolutions {self.network.resolutions} do not match stages {res}")
        for i, s in enumerate(self.stages):
            final = i == len(self.stages) - 1
            if s.solver not in SOLVERS:
                raise ConfigError(f"stage {s.resolution}: solver {s.solver!r}, choose {', '.join(SOLVERS)}")
            if self.objective == "flow" or s.schedule != "edm":
                self._validate_flow_stage(s, final)
            elif s.steps < 1 or not (0 < s.sigma_min < s.sigma_max):
                raise ConfigError(f"stage {s.resolution}: need steps >= 1 and 0 < sigma_min < sigma_max")
            if s.cfg_scale != 1 and not self.network.label_dim:
                raise ConfigError(f"stage {s.resolution}: cfg_scale needs a class-conditional model")
            if s.schedule == "edm" and s.shift != 1:
                raise ConfigError(f"stage {s.resolution}: shift belongs to the flow schedule (schedule=flow); "
                                  "the edm schedule is shaped by rho")
            if not final and s.steps < 2:
                raise ConfigError(f"stage {s.resolution}: a truncated stage needs steps >= 2")
            if s.nfe is not None:
                if final and s.nfe != s.schedule_nfe(True):
                    raise ConfigError(f"final stage {s.resolution}: it runs to sigma=0, its NFE is "
                                      f"{s.schedule_nfe(True)}; change steps instead of nfe")
                if not final and not 1 <= s.nfe <= s.schedule_nfe(False):
                    raise ConfigError(f"stage {s.resolution}: truncation after {s.nfe} NFE is past the last step "
                                      f"of its {s.steps}-step schedule ({s.schedule_nfe(False)} NFE); "
                                      "raise steps or lower nfe")
        for r in self.train.loss_weights:
            if r not in res:
                raise ConfigError(f"loss weight for resolution {r}, which is not a stage")
        if self.train.cosine_loss and self.objective != "flow":
            raise ConfigError("cosine_loss belongs to the flow objective (precond 'flow')")
        if self.latent is not None and self.latent.norm not in ("channel", "scale"):
            raise ConfigError(f"latent norm {self.latent.norm!r}: choose channel or scale")
        self.network.validate()

    def _validate_flow_stage(self, s: StageConfig, final: bool) -> None:
        """Flow noise levels live in [0, 1] (sigma = 1 - t); the ODE solvers only, no churn."""
        where = f"stage {s.resolution}"
        if s.schedule not in ("edm", "flow"):
            raise ConfigError(f"{where}: schedule {s.schedule!r}, choose edm or flow")
        if self.objective != "flow":
            raise ConfigError(f"{where}: the flow schedule needs a flow model (precond 'flow')")
        if s.solver not in ("euler", "heun", "dpmpp2m") or s.S_churn:
            raise ConfigError(f"{where}: a flow model samples with solver euler, heun or dpmpp2m and no churn")
        if s.steps < 1 or not 0 <= s.sigma_min < s.sigma_max <= 1 or (s.schedule == "edm" and s.sigma_min == 0):
            raise ConfigError(f"{where}: flow noise levels need steps >= 1 and 0 <= sigma_min < sigma_max <= 1")
        if s.sigma_max != 1:
            raise ConfigError(f"{where}: a flow stage starts from pure noise (t = 0), so sigma_max must be 1; "
                              "move the first steps with shift instead")
        if s.schedule == "flow" and (s.shift <= 0 or (final and s.sigma_min != 0)):
            raise ConfigError(f"{where}: a flow schedule needs shift > 0, and the final stage sigma_min = 0")

    # --- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"]["loss_weights"] = {str(k): v for k, v in self.train.loss_weights.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        d = copy.deepcopy(d)
        train = d.pop("train", {})
        train["loss_weights"] = {int(k): float(v) for k, v in train.get("loss_weights", {}).items()}
        latent = d.pop("latent", None)
        return cls(network=NetworkConfig(**d.pop("network")),
                   stages=[StageConfig(**_floats(s)) for s in d.pop("stages")],
                   train=TrainConfig(**train), latent=LatentConfig(**latent) if latent else None, **d)

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(copy.deepcopy(self), **changes)


def _json_default(o):
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    raise TypeError(o)


def _floats(d: dict) -> dict:
    return {k: (float("inf") if v == "inf" else v) for k, v in d.items()}


# ---------------------------------------------------------------------------------------
# Presets. Stage plans: the paper gives the NFE spent per resolution (Tables 2, 3, 6, 7)
# and Appendix C gives the full low-resolution schedules for the two-stage models (35 NFE
# = 18 steps at 16x16 truncated after 19 NFE; 79 NFE = 40 steps at 32x32 truncated after
# 49) and the conditioned range [0.01, 50]. Where the paper does not state a stage's
# schedule length we choose it (documented in docs/architecture.md) so that the NFE match.

WIDE = dict(sigma_min=0.002, sigma_max=80.0)        # EDM's range, unconditional stages
NARROW = dict(sigma_min=0.01, sigma_max=50.0)       # paper Table 10, conditioned stages

CIFAR_NET = dict(img_resolution=32, channel_mult=(2, 2, 2), augment_dim=9, dropout=0.13)
FFHQ_NET = dict(img_resolution=64, channel_mult=(1, 2, 2, 2), augment_dim=9, dropout=0.05)
CIFAR_TRAIN = dict(batch=512, lr=1e-3, xflip=False)
FFHQ_TRAIN = dict(batch=256, lr=2e-4, xflip=False)

# The Fashion-MNIST CPU presets: same width for LowDiff and the baseline.
FASHION_NET = dict(img_resolution=32, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2, 2),
                   num_blocks=2, attn_resolutions=(8,), dropout=0.0, channel_mult_emb=4)
FASHION_TRAIN = dict(batch=64, lr=1e-3, lr_rampup_kimg=10, ema_halflife_kimg=20, ema_rampup_ratio=0.1,
                     duration_kimg=80, log_kimg=1, checkpoint_kimg=10, xflip=False)

# Latent space (paper Sec. 4.1, Tab. 4; specs/lightningdit-spec.md 1-3): LightningDiT-B/1 on
# VA-VAE f16d32 latents of ImageNet 256 (16x16x32), rectified flow, Euler with timestep shift
# 0.3. Recipe: AdamW lr 2e-4, betas (0.9, 0.95), no decay or warm-up, batch 1024, EMA 0.9999
# per step (half-life 1024 ln(0.5)/ln(0.9999) images), class dropout 0.1, cosine loss on;
# baseline 80k steps (64 epochs), LowDiff 42 epochs (paper App. A).
FLOW = dict(schedule="flow", solver="euler", sigma_min=0.0, sigma_max=1.0, shift=0.3)
IMAGENET_EPOCH_KIMG = 1281.167
IMAGENET_NET = dict(arch="dit", img_resolution=16, in_channels=32, out_channels=32, label_dim=1000, label_dropout=0.1,
                    hidden_size=768, depth=12, num_heads=12, patch_size=1, dropout=0.0)
IMAGENET_TRAIN = dict(batch=1024, lr=2e-4, adam_betas=(0.9, 0.95), lr_rampup_kimg=0,
                      ema_halflife_kimg=1.024 * math.log(0.5) / math.log(0.9999), ema_rampup_ratio=None,
                      xflip=True, cosine_loss=True, precision="bf16", log_kimg=100, checkpoint_kimg=20_480)

# The Fashion-MNIST latent CPU presets: a tiny DiT on 16x16x4 latents of a tiny f2 VAE
# (`lowdiff dataset encode fashion-mnist --vae DIR --out DIR`, then --data DIR).
FASHION_LATENT_NET = dict(arch="dit", img_resolution=16, in_channels=4, out_channels=4, label_dim=10,
                          label_dropout=0.1, hidden_size=128, depth=4, num_heads=4, patch_size=1, dropout=0.0)
FASHION_LATENT_TRAIN = dict(FASHION_TRAIN, lr=5e-4, lr_rampup_kimg=0, adam_betas=(0.9, 0.95), xflip=True,
                            cosine_loss=True)


# The emoji presets: 64x64 RGB, one level more than the Fashion net.
EMOJI_NET = dict(img_resolution=64, in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2, 2, 2),
                 num_blocks=2, attn_resolutions=(8,), dropout=0.1, channel_mult_emb=4)
EMOJI_TRAIN = dict(batch=64, lr=1e-3, lr_rampup_kimg=10, ema_halflife_kimg=20, ema_rampup_ratio=0.1,
                   duration_kimg=200, log_kimg=1, checkpoint_kimg=10, xflip=False)


def _edm(name, desc, net, steps, train, data="", **kw) -> Preset:
    r = net["img_resolution"]
    return Preset(name, desc, NetworkConfig(resolutions=(r,), **net), [StageConfig(r, steps=steps, **WIDE)],
                  TrainConfig(**train), data=data, **kw)


def _lowdiff(name, desc, net, stages, train, baseline, unified=True, data="", **kw) -> Preset:
    res = tuple(s.resolution for s in stages)
    t = dict(train)
    t.setdefault("duration_kimg", 0.75 * 200_000)    # paper App. A: 75% of the baseline's images
    return Preset(name, desc, NetworkConfig(resolutions=res if unified else (res[-1],), base_resolution=res[0], **net),
                  stages, TrainConfig(**t), unified=unified, baseline=baseline, data=data, **kw)


def _build_presets() -> dict[str, Preset]:
    P: list[Preset] = []
    cifar3 = [StageConfig(8, steps=18, nfe=18, **WIDE), StageConfig(16, steps=9, nfe=13, **NARROW),
              StageConfig(32, steps=9, **NARROW)]
    cifar2 = [StageConfig(16, steps=18, nfe=19, **WIDE), StageConfig(32, steps=9, **NARROW)]
    ffhq4 = [StageConfig(8, steps=40, nfe=22, **WIDE), StageConfig(16, steps=20, nfe=23, **NARROW),
             StageConfig(32, steps=20, nfe=23, **NARROW), StageConfig(64, steps=20, **NARROW)]
    ffhq2 = [StageConfig(32, steps=40, nfe=49, **WIDE), StageConfig(64, steps=20, **NARROW)]

    P.append(_edm("edm-cifar10-uncond", "EDM baseline, CIFAR-10 32x32 unconditional (DDPM++, Heun 18 steps = 35 NFE)",
                  CIFAR_NET, 18, CIFAR_TRAIN, paper=dict(params_m=55.74, fid=2.04, latency_s=2.22)))
    P.append(_edm("edm-cifar10-cond", "EDM baseline, CIFAR-10 32x32 class-conditional (35 NFE)",
                  dict(CIFAR_NET, label_dim=10), 18, CIFAR_TRAIN, paper=dict(params_m=55.74, fid=1.84)))
    P.append(_edm("edm-ffhq64", "EDM baseline, FFHQ 64x64 unconditional (Heun 40 steps = 79 NFE)",
                  FFHQ_NET, 40, FFHQ_TRAIN, paper=dict(params_m=61.80, fid=2.47, latency_s=12.06)))
    P.append(_lowdiff("cifar10-uncond", "LowDiff CIFAR-10 unconditional, 8-16-32, NFE 18/13/17 (paper Tab. 2)",
                      CIFAR_NET, cifar3, CIFAR_TRAIN, "edm-cifar10-uncond",
                      paper=dict(params_m=55.77, fid=2.11, effective_nfe=22, latency_s=1.37)))
    P.append(_lowdiff("cifar10-cond", "LowDiff CIFAR-10 class-conditional, 8-16-32, NFE 18/13/17 (paper Tab. 2)",
                      dict(CIFAR_NET, label_dim=10), cifar3, CIFAR_TRAIN, "edm-cifar10-cond",
                      paper=dict(params_m=55.77, fid=1.94)))
    P.append(_lowdiff("cifar10-uncond-2stage", "LowDiff CIFAR-10 two-stage 16-32, NFE 19/17 (paper Tab. 6)",
                      CIFAR_NET, cifar2, CIFAR_TRAIN, "edm-cifar10-uncond",
                      paper=dict(params_m=55.76, fid=2.10, latency_s=1.39)))
    P.append(_lowdiff("cdm-cifar10-uncond-2stage", "CDM ablation: two independent networks 16 / 32 (paper Tab. 8)",
                      CIFAR_NET, cifar2, CIFAR_TRAIN, "edm-cifar10-uncond", unified=False,
                      paper=dict(params_m=93.89, fid=2.21)))
    P.append(_lowdiff("ffhq64", "LowDiff FFHQ 64x64, 8-16-32-64, NFE 22/23/23/39 (paper Tab. 3)",
                      FFHQ_NET, ffhq4, FFHQ_TRAIN, "edm-ffhq64",
                      paper=dict(params_m=61.86, fid=2.43, latency_s=7.95)))
    P.append(_lowdiff("ffhq64-2stage", "LowDiff FFHQ 64x64 two-stage 32-64, NFE 49/39 (paper Tab. 7)",
                      FFHQ_NET, ffhq2, FFHQ_TRAIN, "edm-ffhq64",
                      paper=dict(params_m=61.82, fid=2.46, latency_s=8.97)))
    P.append(_lowdiff("cdm-ffhq64-2stage", "CDM ablation: two independent networks 32 / 64 (paper Tab. 9)",
                      FFHQ_NET, ffhq2, FFHQ_TRAIN, "edm-ffhq64", unified=False,
                      paper=dict(params_m=117.57, fid=2.53)))

    # Small CPU presets on Fashion-MNIST padded to 32x32 (same width for both models).
    fashion3 = [StageConfig(8, steps=18, nfe=18, **WIDE), StageConfig(16, steps=9, nfe=13, **NARROW),
                StageConfig(32, steps=9, **NARROW)]
    for cond in (False, True):
        sfx, net = ("-cond", dict(FASHION_NET, label_dim=10)) if cond else ("", FASHION_NET)
        what = "class-conditional" if cond else "unconditional"
        P.append(_edm(f"edm-fashion-tiny{sfx}", f"CPU baseline: tiny EDM U-Net, Fashion-MNIST 32x32 {what} (35 NFE)",
                      net, 18, FASHION_TRAIN, data="fashion-mnist", precond="edm"))
        P.append(_lowdiff(f"lowdiff-fashion-tiny{sfx}",
                          f"CPU LowDiff: tiny unified U-Net, Fashion-MNIST 8-16-32 {what}, NFE 18/13/17",
                          net, fashion3, FASHION_TRAIN,   # same image budget as the baseline (results.md)
                          f"edm-fashion-tiny{sfx}", data="fashion-mnist", precond="edm"))
    # The Table 6 / Table 8 ablations on Fashion (unconditional, like the paper's CIFAR-10
    # ones): two-stage 16-32 with CIFAR's two-stage plan (NFE 19/17), unified and as CDM (two
    # independent networks); trained with the same budget as lowdiff-fashion-tiny.
    fashion2 = [StageConfig(16, steps=18, nfe=19, **WIDE), StageConfig(32, steps=9, **NARROW)]
    P.append(_lowdiff("lowdiff-fashion-tiny-2stage", "Ablation (Tab. 6): tiny unified U-Net, Fashion-MNIST "
                      "two-stage 16-32 unconditional, NFE 19/17", FASHION_NET, copy.deepcopy(fashion2), FASHION_TRAIN,
                      "edm-fashion-tiny", data="fashion-mnist", precond="edm"))
    P.append(_lowdiff("cdm-fashion-tiny-2stage", "Ablation (Tab. 8): CDM, two independent tiny U-Nets 16 / 32, "
                      "Fashion-MNIST unconditional, NFE 19/17", FASHION_NET, copy.deepcopy(fashion2), FASHION_TRAIN,
                      "edm-fashion-tiny", unified=False, data="fashion-mnist", precond="edm"))

    # Small presets on the colour emoji (64x64 RGB, ~1,900 images): the FFHQ-64 analogue,
    # with FFHQ's 4-stage plan (NFE 22/23/23/39) against EDM's 79 NFE. Horizontal flips
    # would mirror text and arrows, so no xflip.
    P.append(_edm("edm-emoji-tiny", "CPU/GPU baseline: small EDM U-Net, emoji 64x64 RGB unconditional (79 NFE)",
                  EMOJI_NET, 40, EMOJI_TRAIN, data="emoji", precond="edm"))
    P.append(_lowdiff("lowdiff-emoji-tiny", "LowDiff: small unified U-Net, emoji 8-16-32-64, NFE 22/23/23/39",
                      EMOJI_NET, copy.deepcopy(ffhq4), EMOJI_TRAIN, "edm-emoji-tiny", data="emoji", precond="edm"))

    # Latent space. The paper gives 45 NFE at 8x8 and 50 at 16x16; we choose the 8x8 schedule
    # as the baseline's (100 steps), truncated after 45: it hands over at noise level 0.80, the
    # same signal-to-noise ratio as the CIFAR 8x8 stage's hand-over (sigma 1.93 at sigma_data 0.5).
    # Guidance is off (cfg_scale 1) but its interval is LightningDiT's (start t = 0.11), so
    # `--stage 16:cfg_scale=W` turns it on with the released recipe (guiding all channels).
    in256 = LatentConfig(image_resolution=256, image_channels=3)
    flow_in = dict(FLOW, cfg_sigma_max=0.89)
    P.append(Preset("imagenet256-lightningdit-b1",
                    "LightningDiT-B/1 baseline, ImageNet 256 on VA-VAE latents (16x16x32), flow, Euler 100 NFE "
                    "(paper Tab. 4; 130,556,192 parameters incl. the frozen sin-cos table, as the paper counts)",
                    NetworkConfig(resolutions=(16,), **IMAGENET_NET), [StageConfig(16, steps=100, **flow_in)],
                    TrainConfig(duration_kimg=80_000 * 1.024, **IMAGENET_TRAIN), precond="flow", latent=in256,
                    paper=dict(params_m=130.56, fid=4.38, inception_score=162.65, nfe=100, latency_s=21.87)))
    P.append(_lowdiff("imagenet256", "LowDiff ImageNet 256, unified LightningDiT-B/1 on VA-VAE latents 8-16, "
                      "NFE 45/50 (paper Tab. 4; 131,929,664 parameters = the paper's 131.86M layout + 65,536 for "
                      "the condition-noise embedding)", IMAGENET_NET,
                      [StageConfig(8, steps=100, nfe=45, **flow_in), StageConfig(16, steps=50, **flow_in)],
                      dict(IMAGENET_TRAIN, duration_kimg=42 * IMAGENET_EPOCH_KIMG), "imagenet256-lightningdit-b1",
                      precond="flow", latent=in256,
                      paper=dict(params_m=131.86, fid=4.00, inception_score=195.06, latency_s=13.23)))
    fm = LatentConfig(image_resolution=32, image_channels=1)
    P.append(Preset("flow-fashion-latent-tiny",
                    "CPU baseline: tiny DiT, Fashion-MNIST latents 16x16x4 of a tiny VAE, class-conditional, "
                    "flow, Euler 20 NFE", NetworkConfig(resolutions=(16,), **FASHION_LATENT_NET),
                    [StageConfig(16, steps=20, **FLOW)], TrainConfig(**FASHION_LATENT_TRAIN), precond="flow",
                    latent=fm))
    P.append(_lowdiff("lowdiff-fashion-latent-tiny",
                      "CPU LowDiff: tiny unified DiT, Fashion-MNIST latents 8-16 of a tiny VAE, class-conditional, "
                      "flow, NFE 9/10", FASHION_LATENT_NET,
                      [StageConfig(8, steps=20, nfe=9, **FLOW), StageConfig(16, steps=10, **FLOW)],
                      FASHION_LATENT_TRAIN, "flow-fashion-latent-tiny", precond="flow", latent=fm))
    return {p.name: p for p in P}


PRESETS: dict[str, Preset] = _build_presets()


def get_preset(name: str) -> Preset:
    """A fresh copy of a named preset, or a preset JSON file (e.g. a run's config.json)."""
    if name in PRESETS:
        return copy.deepcopy(PRESETS[name])
    if name.endswith(".json"):
        with open(name) as f:
            return Preset.from_dict(json.load(f))
    close = [p for p in PRESETS if name.split("-")[0] in p]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown preset {name!r}.{hint} `lowdiff presets` lists them all.")
