"""What `lowdiff info` reports: parameter counts, the stage plan, and NFE figures."""
from __future__ import annotations

import json
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import Preset
from .diffusion.denoiser import Denoiser, count_parameters
from .fields import jsonable
from .plans import DEFAULT_RULE, SHORT_RULE, ModelPlans
from .presets import get_preset
from .storage import model_dir, read_config


def meta_denoiser(preset: Preset) -> Denoiser:
    with torch.device("meta"):
        return Denoiser.from_preset(preset)


@lru_cache(maxsize=None)
def _flops(preset_json: str, resolutions: tuple[int, ...] = ()) -> dict[int, float]:
    preset = Preset.from_dict(json.loads(preset_json))
    model = meta_denoiser(preset).eval()
    net = preset.network
    out = {}
    for r in resolutions or preset.resolutions:
        x = torch.zeros(1, net.in_channels, r, r, device="meta")
        kw = {}
        if r > preset.resolutions[0]:
            kw = dict(cond=torch.zeros_like(x), sigma_cond=torch.ones(1, device="meta"))
        labels = torch.zeros(1, net.label_dim, device="meta") if net.label_dim else None
        with FlopCounterMode(display=False) as counter:
            model(x, torch.ones(1, device="meta"), labels, **kw)
        out[r] = counter.get_total_flops()
    return out


def flops_per_evaluation(preset: Preset, resolutions=()) -> dict[int, float]:
    """Forward FLOPs (2 x MACs) of one network evaluation per image, by resolution: the preset's, or
    `resolutions` (a single-resolution network's lower ones too: progressive plans)."""
    return _flops(preset.to_json(), tuple(resolutions))


# Training compute. A training step runs the network forward and backward at every stage
# resolution of each image (`multires_loss`; a baseline has one resolution, a CDM one network
# per resolution). Convention: the backward pass costs twice the forward (gradients with
# respect to activations and to weights, each as many multiply-adds as the forward; Kaplan et
# al. 2020, "Scaling laws for neural language models", Sec. 2.1), so a training image costs
# 3x the forward FLOPs summed over the stage resolutions. FLOPs are what `FlopCounterMode`
# counts: convolutions, matrix products and attention (2 x MACs); normalisations,
# activations and the optimizer are left out.
# Consistency tuning adds one forward pass per image and resolution: the target's, without a
# backward (lowdiff/diffusion/consistency.py).
TRAINING_FLOPS_PER_FORWARD = 3
CONSISTENCY_TARGET_FORWARDS = 1


def training_passes(preset: Preset) -> int:
    """Training FLOPs per image and resolution, in forward passes: forward + backward, and a consistency target's forward."""
    return TRAINING_FLOPS_PER_FORWARD + (CONSISTENCY_TARGET_FORWARDS if preset.consistency is not None else 0)


def training_flops_per_image(preset: Preset) -> dict[int, float]:
    """Training FLOPs per image at each stage resolution (`training_passes` forward passes)."""
    forward = flops_per_evaluation(preset)
    return {r: training_passes(preset) * forward[r] for r in preset.resolutions}


def describe(preset: Preset | str) -> dict:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    preset.validate()
    model = meta_denoiser(preset)
    params = count_parameters(model)
    info = {"name": preset.name, "description": preset.description, "precond": preset.precond.to_config(),
            "arch": preset.network.arch, "resolutions": preset.resolutions, "parameters": params,
            "parameters_m": round(params / 1e6, 2)}
    if len(preset.resolutions) > 1:
        info["unified"] = preset.unified          # a cascade: one unified network, or one per stage (CDM)
    if not preset.unified:
        info["parameters_per_network"] = {k: count_parameters(v) for k, v in model.nets.items()}
    if preset.baseline:
        base = get_preset(preset.baseline)
        info["baseline"] = {"name": base.name, "parameters": count_parameters(meta_denoiser(base)),
                            "nfe": base.stages.total_nfe}
    flops = flops_per_evaluation(preset)
    plan, stages = preset.stages, []
    for i, s in enumerate(plan):
        stages.append({"resolution": s.resolution, "steps": s.steps, "nfe": plan.nfe(i),
                       "sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "rho": s.rho, "solver": s.solver,
                       "truncation_sigma": plan.truncation_sigma(i),
                       "gflops_per_eval": round(flops[s.resolution] / 1e9, 3)})
        if s.start != "noise":
            stages[-1]["start"] = s.start
        if s.handover != "none":
            stages[-1]["handover"] = s.handover
        if s.schedule != "edm" or s.cfg_scale != 1:
            stages[-1] |= {"schedule": s.schedule, "shift": s.shift, "cfg_scale": s.cfg_scale,
                           "cfg_sigma_max": s.cfg_sigma_max}
    info["stages"] = stages
    info["nfe_per_stage"] = plan.nfe_per_stage
    info["nfe_total"] = plan.total_nfe
    info["effective_nfe_flops"] = plan.effective_nfe(flops)
    info["effective_nfe_note"] = ("estimated from FLOPs per evaluation; `lowdiff bench` measures it from "
                                  "latency as in the paper's Appendix B")
    t = preset.train
    info["train"] = {"data": preset.data, "batch": t.batch, "lr": t.lr, "duration_kimg": t.duration_kimg,
                     "lr_rampup_kimg": t.lr_rampup_kimg, "ema_halflife_kimg": t.ema_halflife_kimg,
                     "precision": t.precision, "seed": t.seed, "checkpoint_kimg": t.checkpoint_kimg,
                     "log_kimg": t.log_kimg}
    train_flops = training_flops_per_image(preset)
    info["train"]["gflops_per_image"] = {r: round(v / 1e9, 4) for r, v in train_flops.items()}
    info["train"]["gflops_per_image_total"] = round(sum(train_flops.values()) / 1e9, 4)
    info["train"]["forward_passes"] = training_passes(preset)
    if preset.latent is not None:
        info["latent"] = {"image_resolution": preset.latent.image_resolution, "vae": preset.latent.vae or
                          "recorded from the latent dataset at training (`lowdiff dataset encode --vae ...`)"}
    if preset.paper:
        info["paper"] = preset.paper
    return info


def describe_model(spec: str) -> dict:
    """`describe` of a model directory's preset, with its named plans (lowdiff/plans.py): each
    plan's NFE per stage and the figures it was measured at, and which one is the default."""
    config = read_config(model_dir(spec))
    plans = ModelPlans.read(spec, config)
    info = describe(config[0])
    default = plans.default().name
    info["model"] = spec
    info["plans"] = [{"name": p.name, "default": p.name == default, "description": p.description,
                      "nfe_per_stage": p.stages.nfe_per_stage, "solvers": [s.solver for s in p.stages],
                      "figures": jsonable(p.figures) if p.figures else None} for p in plans.plans.values()]
    info["fid_noise"] = plans.fid_noise
    info["default_plan_rule"] = DEFAULT_RULE
    return info


def _network_kind(info: dict) -> str:
    if "unified" not in info:
        return "single-resolution network"
    return "unified network" if info["unified"] else "one network per stage (CDM)"


PAPER_FIGURES = {"params_m": ("parameters", "{:g} M"), "fid": ("FID", "{:g}"),
                 "effective_nfe": ("effective NFE", "{:g}"), "latency_s": ("latency (batch 64)", "{:g} s")}


def _paper_table(paper: dict) -> list[str]:
    """The paper's reported figures as a two-line table."""
    cells = [(PAPER_FIGURES[k][0], PAPER_FIGURES[k][1].format(v)) for k, v in paper.items() if k in PAPER_FIGURES]
    cells += [(k, str(v)) for k, v in paper.items() if k not in PAPER_FIGURES]
    widths = [max(len(a), len(b)) + 2 for a, b in cells]
    return ["  paper reports   " + "".join(a.ljust(w) for (a, _), w in zip(cells, widths)).rstrip(),
            "                  " + "".join(b.ljust(w) for (_, b), w in zip(cells, widths)).rstrip()]


def _plan_lines(info: dict) -> list[str]:
    lines = [f"  plans           --plan NAME; * the default: {SHORT_RULE.format(noise=info['fid_noise'])}",
             f"    {'name':<12}{'NFE per stage':<18}{'solvers':<26}{'FID':>7}{'samples':>9}{'img/s':>8}  measured on"]
    for p in info["plans"]:
        f = p["figures"]
        nfe = "/".join(str(n) for n in p["nfe_per_stage"].values())
        if list(p["nfe_per_stage"]) != info["resolutions"]:          # a progressive plan: say where
            nfe += f" ({'/'.join(str(r) for r in p['nfe_per_stage'])})"
        measured = (f"{f['fid']:>7.2f}{f['samples']:>9,}{f['images_per_s']:>8.1f}  {f['device']}, batch {f['batch']}"
                    if f else f"{'-':>7}{'-':>9}{'-':>8}  {p['description']}")
        lines.append(f"  {'*' if p['default'] else ' '} {p['name']:<12}{nfe:<18}{'/'.join(p['solvers']):<26}{measured}")
    return lines


def format_info(info: dict) -> str:
    """The human-readable form of `describe`'s report."""
    lines = [f"{info['name']}: {info['description']}",
             f"  parameters      {info['parameters']:,} ({info['parameters_m']} M), precond {info['precond']}, "
             f"{_network_kind(info)}"]
    lines += [f"    network {k:<8}{v:,}" for k, v in info.get("parameters_per_network", {}).items()]
    if "baseline" in info:
        b = info["baseline"]
        lines.append(f"  baseline        {b['name']}: {b['parameters']:,} parameters, {b['nfe']} NFE")
    lines.append("  stage plan      res  steps  NFE  sigma range  rho/shift  solver  stops at sigma  GFLOPs/eval")
    for s in info["stages"]:
        lines.append(f"                  {s['resolution']:>3}  {s['steps']:>5}  {s['nfe']:>3}  "
                     f"[{s['sigma_min']:g}, {s['sigma_max']:g}]".ljust(46)
                     + f"{s.get('shift', s['rho']):>4g}  {s['solver']:<7} {s['truncation_sigma']:<14.4g}  "
                     f"{s['gflops_per_eval']:.3f}" + (f"  cfg {s['cfg_scale']:g}" if s.get("cfg_scale", 1) != 1 else "")
                     + ("  starts from the stage below" if s.get("start") == "upsampled" else "")
                     + (f"  {s['handover']} hand-over from the stage below" if "handover" in s else ""))
    lines.append(f"  NFE             {info['nfe_total']} in total; effective NFE {info['effective_nfe_flops']} "
                 f"({info['effective_nfe_note']})")
    t = info["train"]
    lines.append(f"  training        data {t['data'] or '(pass --data)'}, batch {t['batch']}, lr {t['lr']:g}, "
                 f"{t['duration_kimg']:g} kimg, EMA half-life {t['ema_halflife_kimg']:g} kimg, {t['precision']}, "
                 f"seed {t['seed']}, states every {t['checkpoint_kimg']:g} kimg")
    per_res = ", ".join(f"{r}x{r} {v:g}" for r, v in t["gflops_per_image"].items())
    target = " + the consistency target's forward" if t["forward_passes"] > TRAINING_FLOPS_PER_FORWARD else ""
    lines.append(f"  training FLOPs  {t['gflops_per_image_total']:g} GFLOP per image ({per_res}; forward + "
                 f"backward{target} = {t['forward_passes']}x the forward at every stage resolution)")
    if "latent" in info:
        lines.append(f"  latents         of {info['latent']['image_resolution']}px images; VAE: {info['latent']['vae']}")
    if "paper" in info:
        lines += _paper_table(info["paper"])
    if "plans" in info:
        lines += _plan_lines(info)
    return "\n".join(lines)
