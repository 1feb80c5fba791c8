"""Inference speed switches, applied in one place: `InferenceOptions` -> `FastDenoiser`.

`FastDenoiser` wraps a `Denoiser` and keeps its call signature D(x, sigma, labels, cond=,
sigma_cond=), so the cascade, the pipeline, the benchmark and the tuner all run the same
code whatever the switches:

- compile: `torch.compile(dynamic=False)`. Shapes are static within a stage, so dynamo
  compiles one graph per resolution and never again while sampling (tested). Noise levels
  reach the graph as tensors, never as Python floats, which dynamo would bake in as
  constants and recompile for at every step. A batch smaller than the first one seen at
  that resolution (the remainder of a seed range) is padded to it, keeping shapes static.
- channels_last: the network's weights and inputs in NHWC memory layout.
- precision: bf16 / fp16 autocast around the network; the preconditioning and the solver
  state stay in float32 / float64.
- cuda_graphs: each resolution's forward is captured once into a CUDA graph over static
  input buffers and replayed (CUDA only; composes with compile).

Sampling itself runs under `torch.inference_mode()` and the solvers work on Python-float
sigmas computed up front, so the step loop has no host-device synchronisation.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from .checks import PRECISIONS
from .errors import ConfigError

# Every compiled (resolution, switches) pair is one cache entry of the same Denoiser.forward;
# dynamo's default limit of 8 would silently fall back to eager past the eighth.
RECOMPILE_LIMIT = 64


@dataclass
class InferenceOptions:
    compile: bool = False
    channels_last: bool = False
    precision: str = "fp32"          # fp32 | bf16 | fp16 (autocast)
    cuda_graphs: bool = False
    compile_backend: Any = "inductor"       # torch.compile backend: a name or a callable

    def check(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        if self.cuda_graphs and device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, not {device.type}: drop --cuda-graphs or use "
                             "--device cuda")


def autocast(precision: str, device: torch.device, cache: bool = True):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision], cache_enabled=cache)


def _full(value, n: int, device: torch.device) -> torch.Tensor:
    """A per-image float32 noise level on `device`; a fill, not a host-to-device copy."""
    if isinstance(value, torch.Tensor):
        return value.to(device, torch.float32).reshape(-1).expand(n).contiguous()
    return torch.full((n,), float(value), dtype=torch.float32, device=device)


def _static(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """An inference tensor with batch n (the last row repeated): dynamo guards on both the
    shape and the dispatch keys, which differ between inference and ordinary tensors."""
    if t is None:
        return t
    if t.shape[0] < n:
        return torch.cat([t, t[-1:].expand(n - t.shape[0], *t.shape[1:])])
    return t if t.is_inference() else t.clone()


class FastDenoiser:
    """A `Denoiser` behind the inference options; same call signature."""

    def __init__(self, denoiser, options: InferenceOptions | None = None, device: torch.device | str = "cpu"):
        self.options = options or InferenceOptions()
        self.device = torch.device(device)
        self.options.check(self.device)
        self.denoiser = denoiser.eval().requires_grad_(False)
        if self.options.channels_last:
            self.denoiser.to(memory_format=torch.channels_last)
        self._forward = self.denoiser
        if self.options.compile:
            self._forward = torch.compile(self.denoiser, dynamic=False, backend=self.options.compile_backend)
        self._static = self.options.compile or self.options.cuda_graphs       # fixed shapes per resolution
        self._batch: dict[int, int] = {}         # resolution -> static batch size
        self._graphs: dict[tuple, tuple] = {}    # (resolution, batch) -> (graph, static inputs, output)

    def __call__(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None, sigma_cond=None) -> torch.Tensor:
        n, r = x.shape[0], x.shape[-1]
        with torch.inference_mode():
            args = [x.to(torch.float32), _full(sigma, n, x.device), class_labels,
                    None if cond is None else cond.to(torch.float32),
                    None if sigma_cond is None else _full(sigma_cond, n, x.device)]
            if self.options.channels_last:
                args = [a.contiguous(memory_format=torch.channels_last) if a is not None and a.ndim == 4 else a
                        for a in args]
            batch = max(self._batch.setdefault(r, n), n)
            if self._static:
                args = [_static(a, batch) for a in args]
            out = self._graphed(r, batch, args) if self.options.cuda_graphs else self._run(args)
        return out[:n]

    def _run(self, args) -> torch.Tensor:
        x, sigma, labels, cond, sigma_cond = args
        limit = (torch._dynamo.config.patch(cache_size_limit=RECOMPILE_LIMIT) if self.options.compile
                 else contextlib.nullcontext())
        with autocast(self.options.precision, self.device, cache=not self.options.cuda_graphs), limit:
            return self._forward(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)

    def _graphed(self, r: int, batch: int, args) -> torch.Tensor:
        """Capture the forward at this shape once (after warm-up on a side stream), then
        copy the inputs into the captured buffers and replay (torch.cuda.graph protocol)."""
        key = (r, batch)
        if key not in self._graphs:
            static = [None if a is None else a.clone() for a in args]
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._run(static)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._run(static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for buf, a in zip(static, args):
            if buf is not None:
                buf.copy_(a)
        graph.replay()
        return out.clone()
