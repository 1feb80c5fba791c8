"""The catalogue of named presets: the paper's configurations and small CPU ones.

This module is the one place where the paper's settings live (LowDiff paper Tables 2-9,
Appendix C; EDM Table 7 / train.py for the baselines). Baselines and ablations are
presets, never code forks: EDM = one stage, CDM = `unified=False`, two- vs three-stage =
another stage list. `lowdiff presets` lists them, `lowdiff info NAME` prints one.
"""
from __future__ import annotations

import copy
import dataclasses
import math

from .config import ConsistencyConfig, LatentConfig, Preset, TrainConfig
from .diffusion.consistency import boundaries_of, consistency_plan
from .diffusion.plan import StageConfig
from .diffusion.precond import Flow
from .errors import ConfigError
from .files import read_json
from .nn import DiTConfig, UNetConfig

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

# Latent space (paper Sec. 4.1, Tab. 4; LightningDiT Sec. 4-5): LightningDiT-B/1 on
# VA-VAE f16d32 latents of ImageNet 256 (16x16x32), rectified flow, Euler with timestep shift
# 0.3. Recipe: AdamW lr 2e-4, betas (0.9, 0.95), no decay or warm-up, batch 1024, EMA 0.9999
# per step (half-life 1024 ln(0.5)/ln(0.9999) images), class dropout 0.1, cosine loss on;
# baseline 80k steps (64 epochs), LowDiff 42 epochs (paper App. A).
FLOW = dict(schedule="flow", solver="euler", sigma_min=0.0, sigma_max=1.0, shift=0.3)
IMAGENET_EPOCH_KIMG = 1281.167
IMAGENET_NET = dict(arch="dit", img_resolution=16, in_channels=32, out_channels=32, label_dim=1000, label_dropout=0.1,
                    hidden_size=768, depth=12, num_heads=12, patch_size=1)
IMAGENET_TRAIN = dict(batch=1024, lr=2e-4, adam_betas=(0.9, 0.95), lr_rampup_kimg=0,
                      ema_halflife_kimg=1.024 * math.log(0.5) / math.log(0.9999), ema_rampup_ratio=None,
                      xflip=True, precision="bf16", log_kimg=100, checkpoint_kimg=20_480)

# The Fashion-MNIST latent CPU presets (the paper's 8x8 -> 16x16 latent cascade one level down):
# a small DiT on the 8x8x4 latents of the bundled f4 VAE (32x32 images),
# `lowdiff dataset encode fashion-mnist --vae bundled:fashion-vae --lowest 4 --out DIR`, then --data DIR.
# LightningDiT's recipe scaled down: AdamW-style betas (0.9, 0.95), no warm-up, class dropout 0.1
# (CFG), cosine loss; no flips (Fashion-MNIST's shoes all face one way).
FASHION_LATENT_NET = dict(arch="dit", img_resolution=8, in_channels=4, out_channels=4, label_dim=10,
                          label_dropout=0.1, hidden_size=128, depth=6, num_heads=4, patch_size=1)
FASHION_LATENT_TRAIN = dict(FASHION_TRAIN, lr=5e-4, lr_rampup_kimg=0, adam_betas=(0.9, 0.95), xflip=False,
                            duration_kimg=200)
# The paper's geometry one level down (issue 35): a factor-2 VAE with one latent channel (16x16x1,
# the same 4x compression as the f4 VAE's 8x8x4) and an 8x8 -> 16x16 cascade of single-channel latent
# pixels (patch 1), as the paper's 8x8 -> 16x16 tokens of ImageNet 256. The same DiT width and recipe
# as the 4x4 -> 8x8 pair; the baseline's 120 kimg (290.3 TFLOP) take 1.5 h on one core (21.7 img/s), and
# LowDiff trains at that compute (`--duration-tflop 290.3005`: 99.6 kimg; paper App. A: 42 vs 64 epochs).
FASHION_LATENT16_NET = dict(FASHION_LATENT_NET, img_resolution=16, in_channels=1, out_channels=1)
FASHION_LATENT16_TRAIN = dict(FASHION_LATENT_TRAIN, duration_kimg=120)


# The CIFAR-10 CPU presets (issue: the paper's main dataset at reachable scale): the Fashion
# network with 3 channels, class-conditional, the same width and image budget for both models.
# Horizontal flips preserve every CIFAR-10 class, so they are on (EDM's CIFAR-10 runs flip too).
CIFAR_TINY_NET = dict(FASHION_NET, in_channels=3, out_channels=3, label_dim=10)
CIFAR_TINY_TRAIN = dict(FASHION_TRAIN, duration_kimg=100, xflip=True)


# The emoji presets: 64x64 RGB, one level more than the Fashion net.
EMOJI_NET = dict(img_resolution=64, in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2, 2, 2),
                 num_blocks=2, attn_resolutions=(8,), dropout=0.1, channel_mult_emb=4)
EMOJI_TRAIN = dict(batch=64, lr=1e-3, lr_rampup_kimg=10, ema_halflife_kimg=20, ema_rampup_ratio=0.1,
                   duration_kimg=200, log_kimg=1, checkpoint_kimg=10, xflip=False)


# Consistency tuning (lowdiff/diffusion/consistency.py; ECT, Geng et al. 2024): a preset's model
# tuned from its trained weights (`--init-from`), each stage ending where the preset's plan hands
# over (the final one at sigma 0.002). Short CPU tunings: a tenth of the preset's learning rate, no
# ramp-up, a short EMA, the step t - r halved every kimg (ECT: every eighth of the run).
CT_TRAIN = dict(lr=1e-4, lr_rampup_kimg=0, ema_halflife_kimg=2, ema_rampup_ratio=0.1, duration_kimg=8,
                log_kimg=0.5, checkpoint_kimg=2)


def consistency_tuned(base: Preset) -> Preset:
    """`base` consistency-tuned: its plan becomes one consistency step per stage."""
    boundaries = boundaries_of(base.stages)
    return base.replace(name=f"{base.name}-ct", description=f"Consistency tuning of {base.name} (--init-from a "
                        "trained model of it), one step per stage", baseline=f"{base.baseline}-ct" if base.baseline else "",
                        stages=consistency_plan(base.stages, boundaries, {r: 1 for r in base.resolutions}),
                        train=dataclasses.replace(base.train, **CT_TRAIN), paper={},
                        consistency=ConsistencyConfig(boundaries))


def _network(net: dict, **kw):
    """The network config of a preset's network dict: DiTConfig for arch 'dit', else UNetConfig."""
    net = dict(net, **kw)
    return DiTConfig(**net) if net.pop("arch", "unet") == "dit" else UNetConfig(**net)


def _edm(name, desc, net, steps, train, data="", precond="edm", **kw) -> Preset:
    r = net["img_resolution"]
    return Preset(name, desc, _network(net, resolutions=(r,)), [StageConfig(r, steps=steps, **WIDE)],
                  TrainConfig(**train), data=data, precond=precond, **kw)


def _lowdiff(name, desc, net, stages, train, baseline, unified=True, data="", precond="edm", **kw) -> Preset:
    res = tuple(s.resolution for s in stages)
    t = dict(train)
    t.setdefault("duration_kimg", 0.75 * 200_000)    # paper App. A: 75% of the baseline's images
    return Preset(name, desc, _network(net, resolutions=res if unified else (res[-1],), base_resolution=res[0]),
                  stages, TrainConfig(**t), unified=unified, baseline=baseline, data=data, precond=precond, **kw)


def _fashion_latent_pair(tag: str, vae: str, shape: str, net: dict, train: dict, geometry: str = "") -> list[Preset]:
    """A Fashion-MNIST latent pair on `net`'s grid r: the flow baseline (`flow-fashion-latent{tag}-tiny`,
    20 Euler steps at r) and LowDiff r/2 -> r (`lowdiff-fashion-latent{tag}-tiny`): the r/2 stage on the
    baseline's 20-step grid truncated after 9 NFE (45%, as the paper's 45 of 100), the final stage at
    half the steps (10; paper 50 of 100). Train on `lowdiff dataset encode fashion-mnist --vae VAE
    --lowest r/2 --out DIR` (bundled:fashion-vae for the 8x8x4 latents, bundled:fashion-vae-f2 for 16x16x1)."""
    r, baseline = net["img_resolution"], f"flow-fashion-latent{tag}-tiny"
    fm = LatentConfig(image_resolution=32, image_channels=1)
    return [Preset(baseline, f"CPU baseline: small DiT on {vae} {shape} Fashion-MNIST latents, class-conditional, "
                   "flow, Euler 20 NFE", _network(net, resolutions=(r,)), [StageConfig(r, steps=20, **FLOW)],
                   TrainConfig(**train), precond=Flow(cosine=True), latent=fm),
            _lowdiff(f"lowdiff-fashion-latent{tag}-tiny", f"CPU LowDiff: small unified DiT on {vae} "
                     f"Fashion-MNIST latents {r // 2}-{r}{geometry}, class-conditional, flow, NFE 9/10", net,
                     [StageConfig(r // 2, steps=20, nfe=9, **FLOW), StageConfig(r, steps=10, **FLOW)],
                     train, baseline, precond=Flow(cosine=True), latent=fm)]


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
                      net, 18, FASHION_TRAIN, data="fashion-mnist"))
        P.append(_lowdiff(f"lowdiff-fashion-tiny{sfx}",
                          f"CPU LowDiff: tiny unified U-Net, Fashion-MNIST 8-16-32 {what}, NFE 18/13/17",
                          net, fashion3, FASHION_TRAIN,   # same image budget as the baseline (results.md)
                          f"edm-fashion-tiny{sfx}", data="fashion-mnist"))
    # No default dataset: pass --data cifar-10-python.tar.gz (or an EDM-layout zip of CIFAR-10).
    P.append(_edm("edm-cifar-tiny-cond", "CPU baseline: tiny EDM U-Net, CIFAR-10 32x32 RGB class-conditional (35 NFE)",
                  CIFAR_TINY_NET, 18, CIFAR_TINY_TRAIN))
    P.append(_lowdiff("lowdiff-cifar-tiny-cond", "CPU LowDiff: tiny unified U-Net, CIFAR-10 8-16-32 RGB "
                      "class-conditional, NFE 18/13/17", CIFAR_TINY_NET, copy.deepcopy(fashion3), CIFAR_TINY_TRAIN,
                      "edm-cifar-tiny-cond"))
    # The Table 6 / Table 8 ablations on Fashion (unconditional, like the paper's CIFAR-10
    # ones): two-stage 16-32 with CIFAR's two-stage plan (NFE 19/17), unified and as CDM (two
    # independent networks); trained with the same budget as lowdiff-fashion-tiny.
    fashion2 = [StageConfig(16, steps=18, nfe=19, **WIDE), StageConfig(32, steps=9, **NARROW)]
    P.append(_lowdiff("lowdiff-fashion-tiny-2stage", "Ablation (Tab. 6): tiny unified U-Net, Fashion-MNIST "
                      "two-stage 16-32 unconditional, NFE 19/17", FASHION_NET, copy.deepcopy(fashion2), FASHION_TRAIN,
                      "edm-fashion-tiny", data="fashion-mnist"))
    P.append(_lowdiff("cdm-fashion-tiny-2stage", "Ablation (Tab. 8): CDM, two independent tiny U-Nets 16 / 32, "
                      "Fashion-MNIST unconditional, NFE 19/17", FASHION_NET, copy.deepcopy(fashion2), FASHION_TRAIN,
                      "edm-fashion-tiny", unified=False, data="fashion-mnist"))

    # Small presets on the colour emoji (64x64 RGB, ~1,900 images): the FFHQ-64 analogue,
    # with FFHQ's 4-stage plan (NFE 22/23/23/39) against EDM's 79 NFE. Horizontal flips
    # would mirror text and arrows, so no xflip.
    P.append(_edm("edm-emoji-tiny", "CPU/GPU baseline: small EDM U-Net, emoji 64x64 RGB unconditional (79 NFE)",
                  EMOJI_NET, 40, EMOJI_TRAIN, data="emoji"))
    P.append(_lowdiff("lowdiff-emoji-tiny", "LowDiff: small unified U-Net, emoji 8-16-32-64, NFE 22/23/23/39",
                      EMOJI_NET, copy.deepcopy(ffhq4), EMOJI_TRAIN, "edm-emoji-tiny", data="emoji"))

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
                    _network(IMAGENET_NET, resolutions=(16,)), [StageConfig(16, steps=100, **flow_in)],
                    TrainConfig(duration_kimg=80_000 * 1.024, **IMAGENET_TRAIN), precond=Flow(cosine=True),
                    latent=in256,
                    paper=dict(params_m=130.56, fid=4.38, inception_score=162.65, nfe=100, latency_s=21.87)))
    P.append(_lowdiff("imagenet256", "LowDiff ImageNet 256, unified LightningDiT-B/1 on VA-VAE latents 8-16, "
                      "NFE 45/50 (paper Tab. 4; 131,929,664 parameters = the paper's 131.86M layout + 65,536 for "
                      "the condition-noise embedding)", IMAGENET_NET,
                      [StageConfig(8, steps=100, nfe=45, **flow_in), StageConfig(16, steps=50, **flow_in)],
                      dict(IMAGENET_TRAIN, duration_kimg=42 * IMAGENET_EPOCH_KIMG), "imagenet256-lightningdit-b1",
                      precond=Flow(cosine=True), latent=in256,
                      paper=dict(params_m=131.86, fid=4.00, inception_score=195.06, latency_s=13.23)))
    P += _fashion_latent_pair("", "the bundled VAE's", "8x8x4", FASHION_LATENT_NET, FASHION_LATENT_TRAIN)
    P += _fashion_latent_pair("16", "the f2 VAE's", "16x16x1", FASHION_LATENT16_NET, FASHION_LATENT16_TRAIN,
                              " (the paper's latent geometry)")
    named = {p.name: p for p in P}
    P += [consistency_tuned(named[n]) for n in ("edm-fashion-tiny-cond", "lowdiff-fashion-tiny-cond",
                                                 "edm-cifar-tiny-cond", "lowdiff-cifar-tiny-cond")]
    return {p.name: p for p in P}


PRESETS: dict[str, Preset] = _build_presets()


def get_preset(name: str) -> Preset:
    """A fresh copy of a named preset, or a preset JSON file (e.g. a run's config.json)."""
    if name in PRESETS:
        return copy.deepcopy(PRESETS[name])
    if name.endswith(".json"):
        try:
            return Preset.from_dict(read_json(name), name)
        except OSError as e:
            raise ConfigError(f"preset file {name}: {e.strerror}") from None
    close = [p for p in PRESETS if name.split("-")[0] in p]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown preset {name!r}.{hint} `lowdiff presets` lists them all.")
