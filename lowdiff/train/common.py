"""Machinery both trainers share (the diffusion Trainer in loop.py, the VAE trainer in vae.py):
the deterministic data order, optimizer state as safetensors tensors, and the stop request
that SIGTERM / Ctrl-C raise."""
from __future__ import annotations

import signal
from dataclasses import dataclass

import torch

from ..seeds import derived_seed


@dataclass
class DataStream:
    """Deterministic epoch-wise shuffling; (epoch, position) is the whole state."""
    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=g)

    def next(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            take = self._order()[self.position:self.position + n]
            out.append(take)
            n -= len(take)
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(out)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat tensors `optim.{index}.{name}` (safetensors keys)."""
    return {f"optim.{i}.{k}": torch.as_tensor(v) for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups,
                   device: torch.device | str = "cpu") -> None:
    """The inverse of `optimizer_tensors` (the step counters stay on the CPU, as Adam keeps them)."""
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop writes a state and exits at the next step."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
