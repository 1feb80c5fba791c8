"""What both networks (`UNetConfig` / `UnifiedUNet`, `DiTConfig` / `UnifiedDiT`) state once: the
resolutions rule (sorted; the base resolution defaults to the lowest and may not lie above it),
the size bound checked before anything is allocated, and the dtype their embeddings compute in."""
from __future__ import annotations

import torch

from ..checks import in_range
from ..errors import ConfigError


def settle_resolutions(cfg) -> None:
    """A config's `resolutions` sorted, and its `base_resolution` the lowest of them when 0 (unset)."""
    cfg.resolutions = tuple(sorted(cfg.resolutions))
    if not cfg.base_resolution and cfg.resolutions:
        cfg.base_resolution = min(cfg.resolutions)


def check_sizes(cfg, bounds: dict[str, tuple[int, int]]) -> None:
    """Every size field within its network's bound (`SIZE_BOUNDS`), and the base resolution at most the
    lowest served one."""
    for name, (low, high) in bounds.items():
        in_range(f"network {name}", getattr(cfg, name), low, high, integer=True)
    if cfg.resolutions and cfg.base_resolution > min(cfg.resolutions):
        raise ConfigError("base_resolution must be <= the lowest served resolution")


def at_least_float32(t: torch.Tensor) -> torch.dtype:
    """float32 for tensors of lower (or equal) precision, float64 for float64: a network given
    float64 computes in float64."""
    return torch.promote_types(t.dtype, torch.float32)
