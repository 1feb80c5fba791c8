"""Sampling speed of a cascade against its single-resolution baseline, with the paper's
protocol (Sec. 4.2: one batch of 64, mean over repeated runs after warm-up, synchronised
on CUDA), and the measured effective NFE (Appendix B).

Weights are randomly initialised: speed does not depend on their values. LowDiff and its
baseline are timed alternately in the same process so that machine noise hits both.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from ..config import Preset, get_preset
from ..diffusion.cascade import PerImageGenerator, effective_nfe, sample_cascade
from ..diffusion.denoiser import Denoiser


@dataclass
class BenchOptions:
    batch: int = 64
    repeats: int = 10
    warmup: int = 1
    device: str = "cpu"
    precision: str = "fp32"          # fp32 | bf16 | fp16 (autocast)
    channels_last: bool = False
    compile: bool = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(opts: BenchOptions, device: torch.device):
    if opts.precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    return torch.autocast(device.type, dtype=dtype)


def prepare(preset: Preset, opts: BenchOptions) -> Denoiser:
    device = torch.device(opts.device)
    torch.manual_seed(0)
    model = Denoiser(preset).to(device).eval().requires_grad_(False)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if opts.compile:
        for name, net in model.nets.items():
            model.nets[name] = torch.compile(net, dynamic=False)
    return model


def _inputs(preset: Preset, index: int, batch: int, device: torch.device):
    net = preset.network
    r = preset.stages[index].resolution
    x = torch.randn(batch, net.in_channels, r, r, device=device)
    kw = dict(cond=torch.randn_like(x), sigma_cond=torch.ones(batch, device=device)) if index > 0 else {}
    labels = torch.eye(net.label_dim, device=device)[torch.arange(batch) % net.label_dim] if net.label_dim else None
    return x, labels, kw


@torch.inference_mode()
def time_evaluations(model: Denoiser, opts: BenchOptions, repeats: int = 5) -> dict[int, float]:
    """Seconds per network evaluation of the whole batch, at each stage resolution."""
    device, preset = torch.device(opts.device), model.preset
    out = {}
    for i, stage in enumerate(preset.stages):
        x, labels, kw = _inputs(preset, i, opts.batch, device)
        with _autocast(opts, device):
            for _ in range(max(opts.warmup, 1)):
                model(x, 1.0, labels, **kw)
            _sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                model(x, 1.0, labels, **kw)
            _sync(device)
        out[stage.resolution] = (time.perf_counter() - start) / repeats
    return out


@torch.inference_mode()
def time_sampling(model: Denoiser, opts: BenchOptions, seed: int = 0) -> tuple[float, dict[int, int]]:
    device, preset = torch.device(opts.device), model.preset
    rng = PerImageGenerator(range(seed, seed + opts.batch), device)
    net = preset.network
    labels = torch.eye(net.label_dim, device=device)[torch.arange(opts.batch) % net.label_dim] if net.label_dim else None
    _sync(device)
    start = time.perf_counter()
    with _autocast(opts, device):
        result = sample_cascade(model, preset.stages, rng, net.in_channels, labels)
    _sync(device)
    return time.perf_counter() - start, result.nfe


def bench(preset: Preset | str, opts: BenchOptions, progress=None) -> dict:
    """Latency and throughput of `preset` and of its baseline, timed alternately."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    runs = {"lowdiff": preset}
    if preset.baseline:
        runs = {"lowdiff": preset, "baseline": get_preset(preset.baseline)}
    models = {k: prepare(p, opts) for k, p in runs.items()}
    for _ in range(opts.warmup):
        for m in models.values():
            time_sampling(m, opts)
    times: dict[str, list[float]] = {k: [] for k in models}
    nfe: dict[str, dict[int, int]] = {}
    for rep in range(opts.repeats):
        for k, m in models.items():
            t, nfe[k] = time_sampling(m, opts, seed=rep * opts.batch)
            times[k].append(t)
            if progress is not None:
                progress.update(1)
    report: dict = {"preset": preset.name, "device": _device_name(opts.device), "batch": opts.batch,
                    "repeats": opts.repeats, "precision": opts.precision, "channels_last": opts.channels_last,
                    "compile": opts.compile}
    for k, m in models.items():
        per_eval = time_evaluations(m, opts)
        latency = sum(times[k]) / len(times[k])
        eval_time = sum(nfe[k][r] * per_eval[r] for r in nfe[k])
        report[k] = {"preset": runs[k].name, "latency_s": latency, "images_per_s": opts.batch / latency,
                     "latency_runs_s": times[k], "nfe": nfe[k], "eval_latency_s": per_eval,
                     "effective_nfe": effective_nfe(nfe[k], per_eval),
                     "stage_time_share": {r: nfe[k][r] * per_eval[r] / eval_time for r in nfe[k]},
                     "overhead": 1 - eval_time / latency}
    if "baseline" in report:
        report["throughput_ratio"] = report["lowdiff"]["images_per_s"] / report["baseline"]["images_per_s"]
    return report


def _device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
