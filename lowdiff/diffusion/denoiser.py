"""The denoiser D(x; sigma, cond, sigma_cond): preconditioning around the network(s).

One object serves every resolution of a preset. With `unified=True` (LowDiff) all
resolutions share one UnifiedUNet; with `unified=False` (the CDM ablation) each stage has
its own independent network, built from the same host architecture.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import NetworkConfig, Preset
from ..nn.unet import UnifiedUNet, res_key
from .precond import get_preconditioning


class Denoiser(nn.Module):
    def __init__(self, preset: Preset):
        super().__init__()
        preset.validate()
        self.preset = preset
        self.precond = get_preconditioning(preset.precond)
        self.cond_scaling = preset.cond_scaling
        if preset.unified:
            self.nets = nn.ModuleDict({"unified": UnifiedUNet(preset.network)})
        else:
            cfg = preset.network
            self.nets = nn.ModuleDict({
                res_key(r): UnifiedUNet(NetworkConfig(**{**cfg.__dict__, "resolutions": (r,),
                                                         "base_resolution": cfg.base_resolution}))
                for r in preset.resolutions})

    @property
    def resolutions(self) -> list[int]:
        return self.preset.resolutions

    def net_for(self, resolution: int) -> UnifiedUNet:
        if "unified" in self.nets:
            return self.nets["unified"]
        if res_key(resolution) not in self.nets:
            raise ValueError(f"no network for resolution {resolution}; stages are {self.resolutions}")
        return self.nets[res_key(resolution)]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                cond: torch.Tensor | None = None, sigma_cond: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma): x (N, C, r, r); sigma scalar or (N,). For r above the lowest
        stage, `cond` is the upsampled noisy lower-resolution image at noise sigma_cond."""
        net = self.net_for(x.shape[-1])
        dtype = x.dtype
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        sigma = sigma.expand(x.shape[0], 1, 1, 1)
        c_skip, c_out, c_in, c_noise = self.precond.coefficients(sigma)
        cond_in = cond_noise = None
        if cond is not None:
            sc = torch.as_tensor(sigma_cond, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
            sc = sc.expand(x.shape[0], 1, 1, 1)
            _, _, c_in_c, c_noise_c = self.precond.coefficients(sc)
            cond_in = cond.to(torch.float32) * (c_in_c if self.cond_scaling else 1)
            cond_noise = c_noise_c.flatten()
        F_x = net(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels,
                  cond=cond_in, cond_noise_labels=cond_noise)
        return (c_skip * x + c_out * F_x.to(torch.float32)).to(dtype)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
