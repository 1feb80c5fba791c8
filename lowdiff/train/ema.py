"""Exponential moving average with a half-life in images (EDM training_loop.py, Karras
et al. 2022, Appendix F.3): beta = 0.5 ** (batch / halflife), halflife ramped up as
min(halflife, ramp_ratio * images_seen)."""
from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch: int, images_seen: int, halflife_kimg: float, rampup_ratio: float | None) -> float:
    halflife = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
