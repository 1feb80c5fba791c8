"""The resolution pyramid (paper Sec. 3.2, Fig. 2-3): the one place that moves images
between resolutions. Training builds its low-resolution targets and conditions with
`downsample`; the cascaded sampler hands a stage's output to the next with `upsample`.

Downsampling is the 2x2 box filter (average pooling) and upsampling its transpose,
nearest-neighbour. This pair keeps i.i.d. Gaussian noise of level sigma at level sigma
after `upsample`, so a truncated sample at sigma looks to the next stage exactly like a
training condition perturbed with noise sigma.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _factor(src: int, dst: int) -> int:
    factor = src // dst if src >= dst else dst // src
    if factor * min(src, dst) != max(src, dst) or factor & (factor - 1):
        raise ValueError(f"resolutions {src} and {dst} differ by a factor that is not a power of two")
    return factor


def downsample(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Box-filter x (N, C, H, W) down to resolution x resolution."""
    factor = _factor(x.shape[-1], resolution)
    return F.avg_pool2d(x, factor) if factor > 1 else x


def upsample(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of x to resolution x resolution."""
    factor = _factor(x.shape[-1], resolution)
    return x.repeat_interleave(factor, -1).repeat_interleave(factor, -2) if factor > 1 else x


def build(x: torch.Tensor, resolutions: list[int]) -> dict[int, torch.Tensor]:
    """The clean pyramid {r: downsample(x, r)} for every resolution of the cascade."""
    return {r: downsample(x, r) for r in resolutions}
