"""What `lowdiff info` reports: parameter counts, the stage plan, and NFE figures."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import Preset, get_preset
from .diffusion.cascade import effective_nfe, stage_sigmas
from .diffusion.denoiser import Denoiser, count_parameters
from .diffusion.solvers import SOLVERS


def truncation_sigma(preset: Preset, index: int) -> float:
    """The noise level at which stage `index` hands over (0 for the final stage)."""
    stage = preset.stages[index]
    final = index == len(preset.stages) - 1
    _, _, reached = SOLVERS[stage.solver](lambda x, s: torch.zeros_like(x), torch.zeros(1),
                                          stage_sigmas(stage, final), max_nfe=None if final else stage.nfe)
    return reached


def meta_denoiser(preset: Preset) -> Denoiser:
    with torch.device("meta"):
        return Denoiser(preset)


@lru_cache(maxsize=None)
def _flops(preset_json: str) -> dict[int, float]:
    preset = Preset.from_dict(__import__("json").loads(preset_json))
    model = meta_denoiser(preset).eval()
    net = preset.network
    out = {}
    for i, r in enumerate(preset.resolutions):
        x = torch.zeros(1, net.in_channels, r, r, device="meta")
        kw = {}
        if i > 0:
            kw = dict(cond=torch.zeros_like(x), sigma_cond=torch.ones(1, device="meta"))
        labels = torch.zeros(1, net.label_dim, device="meta") if net.label_dim else None
        with FlopCounterMode(display=False) as counter:
            model(x, torch.ones(1, device="meta"), labels, **kw)
        out[r] = counter.get_total_flops()
    return out


def flops_per_evaluation(preset: Preset) -> dict[int, float]:
    """Forward FLOPs (2 x MACs) of one network evaluation per image, by resolution."""
    return _flops(preset.to_json())


def describe(preset: Preset | str) -> dict:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    preset.validate()
    model = meta_denoiser(preset)
    params = count_parameters(model)
    info = {"name": preset.name, "description": preset.description, "precond": preset.precond,
            "arch": preset.network.arch,
            "unified": preset.unified, "resolutions": preset.resolutions, "parameters": params,
            "parameters_m": round(params / 1e6, 2)}
    if not preset.unified:
        info["parameters_per_network"] = {k: count_parameters(v) for k, v in model.nets.items()}
    if preset.baseline:
        base = get_preset(preset.baseline)
        info["baseline"] = {"name": base.name, "parameters": count_parameters(meta_denoiser(base)),
                            "nfe": base.stages[-1].planned_nfe(True)}
    flops = flops_per_evaluation(preset)
    stages = []
    for i, s in enumerate(preset.stages):
        final = i == len(preset.stages) - 1
        stages.append({"resolution": s.resolution, "steps": s.steps, "nfe": s.planned_nfe(final),
                       "sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "rho": s.rho, "solver": s.solver,
                       "truncation_sigma": truncation_sigma(preset, i), "gflops_per_eval": round(flops[s.resolution] / 1e9, 3)})
        if s.schedule != "edm" or s.cfg_scale != 1:
            stages[-1] |= {"schedule": s.schedule, "shift": s.shift, "cfg_scale": s.cfg_scale,
                           "cfg_sigma_max": s.cfg_sigma_max}
    info["stages"] = stages
    nfe = {s["resolution"]: s["nfe"] for s in stages}
    info["nfe_per_stage"] = nfe
    info["nfe_total"] = sum(nfe.values())
    info["effective_nfe_flops"] = effective_nfe(nfe, flops)
    info["effective_nfe_note"] = ("estimated from FLOPs per evaluation; `lowdiff bench` measures it from "
                                  "latency as in the paper's Appendix B")
    if preset.paper:
        info["paper"] = preset.paper
    return info
