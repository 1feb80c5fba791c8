"""Sampling speed of a cascade against its single-resolution baseline, with the paper's
protocol (Sec. 4.2: one batch of 64, mean over repeated runs after warm-up, synchronised
on CUDA), and the measured effective NFE (Appendix B).

Weights are randomly initialised unless a trained model is given: speed does not depend on
their values. The configurations compared (`Variant`: model, stage plan, inference options)
are timed alternately in the same process so that machine noise hits all of them.
`bench` compares a preset with its baseline under the same options; `compare` any list of
variants, e.g. `option_variants`: the plain fp32 eager Heun baseline against LowDiff with
each speed switch alone and all together.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ..config import Preset
from ..diffusion.cascade import PerImageGenerator, sample_cascade
from ..diffusion.denoiser import Denoiser
from ..diffusion.plan import StagePlan, effective_nfe
from ..inference import FastDenoiser, InferenceOptions
from ..presets import get_preset


@dataclass
class BenchOptions:
    batch: int = 64
    repeats: int = 10
    warmup: int = 1
    device: str = "cpu"
    inference: InferenceOptions = field(default_factory=InferenceOptions)


@dataclass
class Variant:
    """One configuration to time: a model, its stage plan and the inference options."""
    label: str
    preset: Preset
    options: InferenceOptions = field(default_factory=InferenceOptions)
    stages: StagePlan | list | None = None       # None: the preset's plan
    model: Denoiser | None = None                # trained weights; None: random (same speed)
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None   # a latent model's VAE decode, timed too

    @property
    def plan(self) -> StagePlan:
        return StagePlan.of(self.stages) if self.stages is not None else self.preset.stages


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(variant: Variant, device: str) -> FastDenoiser:
    """The variant's own copy of its network (switches such as channels_last change it)."""
    torch.manual_seed(0)
    model = copy.deepcopy(variant.model) if variant.model is not None else Denoiser.from_preset(variant.preset)
    return FastDenoiser(model.to(device), variant.options, device)


def prepare_all(variants: list[Variant], device: str) -> list[FastDenoiser]:
    """One FastDenoiser per distinct (model, options): variants that differ only in their plan
    share it, so a compiled network is compiled once for all its plans."""
    shared: dict[tuple, FastDenoiser] = {}
    out = []
    for v in variants:
        key = (id(v.model) if v.model is not None else v.preset.to_json(), repr(v.options))
        if key not in shared:
            shared[key] = prepare(v, device)
        out.append(shared[key])
    return out


def _labels(preset: Preset, batch: int, device: torch.device) -> torch.Tensor | None:
    net = preset.network
    return torch.eye(net.label_dim, device=device)[torch.arange(batch) % net.label_dim] if net.label_dim else None


def _inputs(preset: Preset, index: int, batch: int, device: torch.device):
    net = preset.network
    r = preset.stages[index].resolution
    x = torch.randn(batch, net.in_channels, r, r, device=device)
    kw = dict(cond=torch.randn_like(x), sigma_cond=torch.ones(batch, device=device)) if index > 0 else {}
    return x, _labels(preset, batch, device), kw


def time_evaluations(model: FastDenoiser, preset: Preset, opts: BenchOptions, repeats: int = 5) -> dict[int, float]:
    """Seconds per network evaluation of the whole batch, at each stage resolution of `preset`."""
    device = torch.device(opts.device)
    out = {}
    for i, stage in enumerate(preset.stages):
        x, labels, kw = _inputs(preset, i, opts.batch, device)
        for _ in range(max(opts.warmup, 1)):
            model(x, 1.0, labels, **kw)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, 1.0, labels, **kw)
        _sync(device)
        out[stage.resolution] = (time.perf_counter() - start) / repeats
    return out


class NetworkTimer:
    """Wraps a denoiser (same call signature) and accumulates the time spent inside it per
    resolution (synchronised on CUDA), so a sampling run splits into network time and the rest:
    solver arithmetic, noise draws, hand-over between stages."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, torch.device(device)
        self.seconds: dict[int, float] = {}
        self.calls: dict[int, int] = {}

    def __call__(self, x, sigma, class_labels=None, cond=None, sigma_cond=None):
        _sync(self.device)
        start = time.perf_counter()
        out = self.model(x, sigma, class_labels, cond=cond, sigma_cond=sigma_cond)
        _sync(self.device)
        r = x.shape[-1]
        self.seconds[r] = self.seconds.get(r, 0.0) + time.perf_counter() - start
        self.calls[r] = self.calls.get(r, 0) + 1
        return out


def time_sampling(model: FastDenoiser, preset: Preset, opts: BenchOptions, seed: int = 0,
                  stages: StagePlan | None = None, timer: NetworkTimer | None = None,
                  decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, dict[int, int]]:
    """Seconds to sample one batch with the plan, and its NFE per stage; with `timer` (wrapping
    `model`), the network time is also accumulated there; with `decode` (a latent model's VAE
    decoder), the decode of the samples is timed as part of the batch."""
    device = torch.device(opts.device)
    rng = PerImageGenerator(range(seed, seed + opts.batch), device)
    labels = _labels(preset, opts.batch, device)
    _sync(device)
    start = time.perf_counter()
    result = sample_cascade(timer or model, stages if stages is not None else preset.stages, rng,
                            preset.network.in_channels, labels, precond=preset.precond)
    if decode is not None:
        decode(result.images)
    _sync(device)
    return time.perf_counter() - start, result.nfe


def measure(variants: list[Variant], opts: BenchOptions, progress=None) -> list[dict]:
    """Latency, throughput, NFE and measured effective NFE of each variant, timed alternately."""
    models = prepare_all(variants, opts.device)

    def tick(v: Variant, what: str) -> None:
        if progress is not None:
            progress.set_description_str(f"{what} {v.label}"[:60])
            progress.update(1)

    for _ in range(opts.warmup):                 # compiles (minutes on a CPU) happen here
        for v, m in zip(variants, models):
            time_sampling(m, v.preset, opts, stages=v.plan, decode=v.decode)
            tick(v, "warm-up")
    times: list[list[float]] = [[] for _ in variants]
    nfe: list[dict[int, int]] = [{} for _ in variants]
    timers = [NetworkTimer(m, torch.device(opts.device)) for m in models]
    for rep in range(opts.repeats):
        for i, (v, m) in enumerate(zip(variants, models)):
            t, nfe[i] = time_sampling(m, v.preset, opts, seed=rep * opts.batch, stages=v.plan, timer=timers[i],
                                      decode=v.decode)
            times[i].append(t)
            tick(v, "timing")
    rows = []
    for v, timer, t, n in zip(variants, timers, times, nfe):
        calls = sum(timer.calls.values())                   # evaluations in all repeats (doubled batches count once)
        per_eval = {r: timer.seconds[r] / timer.calls[r] for r in timer.calls}
        latency = sum(t) / len(t)
        eval_time = sum(timer.seconds.values()) / len(t)
        rows.append({"label": v.label, "preset": v.preset.name, "options": asdict(v.options),
                     "solver": "/".join(s.solver for s in v.plan), "latency_s": latency,
                     "images_per_s": opts.batch / latency, "latency_runs_s": t, "nfe": n,
                     "eval_latency_s": per_eval, "effective_nfe": effective_nfe(n, per_eval),
                     "stage_time_share": {r: timer.seconds[r] / sum(timer.seconds.values()) for r in timer.seconds},
                     "overhead": 1 - eval_time / latency,
                     "overhead_per_step_s": (sum(t) - sum(timer.seconds.values())) / max(calls, 1)})
    return rows


def _header(opts: BenchOptions) -> dict:
    return {"device": device_name(opts.device), "batch": opts.batch, "repeats": opts.repeats}


def bench(preset: Preset | str, opts: BenchOptions, progress=None, stages: StagePlan | None = None,
          baseline_stages: StagePlan | None = None) -> dict:
    """Latency and throughput of `preset` and of its baseline, same options, timed alternately."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    variants = [Variant("lowdiff", preset, opts.inference, stages)]
    if preset.baseline:
        variants.append(Variant("baseline", get_preset(preset.baseline), opts.inference, baseline_stages))
    rows = measure(variants, opts, progress)
    report: dict = {"preset": preset.name, **_header(opts), **asdict(opts.inference)}
    for row in rows:
        report[row["label"]] = row
    if "baseline" in report:
        report["throughput_ratio"] = report["lowdiff"]["images_per_s"] / report["baseline"]["images_per_s"]
    return report


def option_variants(preset: Preset, device: str, stages: StagePlan | None = None,
                    precision: str = "bf16") -> list[Variant]:
    """The reference (the baseline, or the preset itself without one: fp32, eager, its own
    solver), then `preset` eager, compiled, at `precision`, channels_last, and all together
    (with CUDA graphs on CUDA)."""
    ref = Variant("baseline fp32 eager", get_preset(preset.baseline)) if preset.baseline else None
    cuda = torch.device(device).type == "cuda"
    switches = [("eager fp32", InferenceOptions()), ("compiled", InferenceOptions(compile=True)),
                (precision, InferenceOptions(precision=precision)),
                ("channels_last", InferenceOptions(channels_last=True))]
    if cuda:
        switches.append(("cuda graphs", InferenceOptions(cuda_graphs=True)))
    switches.append(("all", InferenceOptions(compile=True, channels_last=True, precision=precision,
                                             cuda_graphs=cuda)))
    variants = [Variant(f"{preset.name} {label}", preset, o, stages) for label, o in switches]
    return ([ref] if ref else []) + variants


def compare(variants: list[Variant], opts: BenchOptions, progress=None) -> dict:
    """Side-by-side report; `speedup` is throughput over the first variant's."""
    rows = measure(variants, opts, progress)
    for row in rows:
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
    return {**_header(opts), "rows": rows}


def device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_report(report: dict) -> str:
    """The table `lowdiff bench` prints for `bench`'s report."""
    lines = [f"{report['preset']} on {report['device']}: batch {report['batch']}, mean of {report['repeats']} runs, "
             f"{report['precision']}{', channels_last' if report['channels_last'] else ''}"
             f"{', compiled' if report['compile'] else ''}",
             f"  {'model':<28}{'latency s':>10}{'img/s':>9}{'NFE per stage':>24}{'eff. NFE':>9}{'overhead':>9}"]
    for key in ("baseline", "lowdiff"):
        if key in report:
            r = report[key]
            nfe = "/".join(str(v) for v in r["nfe"].values())
            lines.append(f"  {r['preset']:<28}{r['latency_s']:>10.3f}{r['images_per_s']:>9.2f}{nfe:>24}"
                         f"{r['effective_nfe']:>9}{r['overhead']:>9.1%}")
    if "throughput_ratio" in report:
        shares = ", ".join(f"{k}: {v:.0%}" for k, v in report["lowdiff"]["stage_time_share"].items())
        lines.append(f"  throughput ratio LowDiff / baseline: {report['throughput_ratio']:.2f}x   "
                     f"(stage time shares {shares})")
    return "\n".join(lines)


def format_comparison(report: dict, name: str) -> str:
    """The table of `lowdiff bench --compare-options` for `compare`'s report."""
    lines = [f"{name} on {report['device']}: batch {report['batch']}, mean of {report['repeats']} runs; "
             f"speedup = throughput over the first row",
             f"  {'configuration':<44}{'solver':<22}{'latency s':>10}{'img/s':>9}{'speedup':>9}{'NFE per stage':>16}"
             f"{'eff. NFE':>9}"]
    for r in report["rows"]:
        nfe = "/".join(str(v) for v in r["nfe"].values())
        lines.append(f"  {r['label']:<44}{r['solver']:<22}{r['latency_s']:>10.3f}{r['images_per_s']:>9.2f}"
                     f"{r['speedup']:>8.2f}x{nfe:>16}{r['effective_nfe']:>9}")
    return "\n".join(lines)

