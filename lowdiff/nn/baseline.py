"""A unified network started from a trained single-resolution network of its family (its
baseline: EDM's SongUNet for the U-Net, the flow DiT for the DiT). The unified network is the
baseline plus per-resolution parts, so the baseline's weights are copied key by key and the
new parts are set so that at the top resolution the unified network computes exactly what
the baseline computes, whatever the condition:

- the top stem reads [x, cond]: its weights for x are the baseline's, those for cond zero;
- the resolution embedding (one-hot -> Linear) adds nothing at the top: its top column and
  bias are zero (the lower resolutions keep their own columns);
- the condition-noise embedding is zero (it is shared by every conditioned resolution).

The lower-resolution stems and heads keep their fresh initialisation. Every zeroed weight
still receives gradients (the condition and the one-hot are non-zero), so training moves
them from there.
"""
from __future__ import annotations

import torch
from torch import nn

from .keys import res_key


def load_baseline(net: nn.Module, baseline: dict[str, torch.Tensor]) -> None:
    """Copy a single-resolution `baseline` state dict (same family and sizes, at `net`'s top
    resolution) into the unified `net` as described above. Keys the baseline lacks keep their
    values; every baseline key must exist in `net` with the same shape (the top stem may have
    twice the input channels)."""
    top = max(net.cfg.resolutions)
    stem = f"{net.STEM}.{res_key(top)}.weight"
    state = net.state_dict()
    for key, value in baseline.items():
        if key == stem and state[key].shape[1] == 2 * value.shape[1]:
            value = torch.cat([value, torch.zeros_like(value)], dim=1)       # (out, [x | cond], kh, kw)
        if state[key].shape != value.shape:
            raise ValueError(f"baseline weight {key} has shape {tuple(value.shape)}, the network "
                             f"{tuple(state[key].shape)}")
        state[key] = value
    net.load_state_dict(state)
    with torch.no_grad():
        resolution = getattr(net, net.RES_EMBED)
        if resolution is not None:
            resolution.weight[:, sorted(net.cfg.resolutions).index(top)] = 0
            resolution.bias.zero_()
        cond_noise = getattr(net, net.COND_NOISE_EMBED)
        if cond_noise is not None:
            cond_noise.weight.zero_()
