"""The denoiser D(x; sigma, cond, sigma_cond): preconditioning around the network(s).

One object serves every resolution of a cascade. With `unified=True` (LowDiff) all
resolutions share one network (UnifiedUNet, or UnifiedDiT for latent presets); with
`unified=False` (the CDM ablation) each stage has its own independent network, built from
the same host architecture. `Denoiser.from_preset` builds the one a preset describes.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import NetworkConfig, build_network
from ..nn.keys import res_key
from .precond import Preconditioning, preconditioning_from


class Denoiser(nn.Module):
    def __init__(self, network: NetworkConfig, precond: Preconditioning | str = "edm",
                 resolutions: list[int] | None = None, unified: bool = True, cond_scaling: bool = True):
        """`network`: the (host) network's config; `precond`: the preconditioning (or its kind: vp,
        ve, edm, flow); `resolutions`: the cascade's stages (default: the network's); `unified`: one
        network for all of them, else one per stage (CDM); `cond_scaling`: scale the condition by
        c_in(sigma_cond) (docs/architecture.md, "The unified network")."""
        super().__init__()
        self.network = network                      # validated by the network's constructor
        self.resolutions = sorted(resolutions or network.resolutions)
        self.precond: Preconditioning = preconditioning_from(precond)
        self.cond_scaling = cond_scaling
        if unified:
            if resolutions:
                check_unified(network, self.resolutions)
            self.nets = nn.ModuleDict({"unified": build_network(network)})
        else:
            self.nets = nn.ModuleDict({res_key(r): build_network(dataclasses.replace(network, resolutions=(r,)))
                                       for r in self.resolutions})

    @classmethod
    def from_preset(cls, preset) -> "Denoiser":
        """The denoiser of a `lowdiff.config.Preset`, validated by whoever made it (`Preset.validate`,
        which also matches a unified network to the stages)."""
        resolutions = None if preset.unified else preset.resolutions
        return cls(preset.network, preset.precond, resolutions, preset.unified, preset.cond_scaling)

    def net_for(self, resolution: int):
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
        c_skip, c_out, F_x = self._evaluate(x, sigma, class_labels, cond, sigma_cond, augment_labels)
        return (c_skip * x.to(F_x.dtype) + c_out * F_x).to(x.dtype)

    def network_output(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                       cond: torch.Tensor | None = None, sigma_cond: torch.Tensor | None = None,
                       augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """F(c_in x; c_noise) in the compute dtype (`compute_dtype`), the raw network output: the
        velocity under the flow preconditioning (what the flow loss compares with u = y - n)."""
        return self._evaluate(x, sigma, class_labels, cond, sigma_cond, augment_labels)[2]

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 for a denoiser moved to float64 (`.double()`): the dtype of the
        preconditioning and of what the network is given (autocast lowers the network's own arithmetic)."""
        weight = next(self.parameters(), None)
        return torch.promote_types(weight.dtype, torch.float32) if weight is not None else torch.float32

    def _evaluate(self, x, sigma, class_labels, cond, sigma_cond, augment_labels):
        """(c_skip, c_out, F) for D = c_skip x + c_out F."""
        net, dtype = self.net_for(x.shape[-1]), self.compute_dtype
        x = x.to(dtype)
        sigma = torch.as_tensor(sigma, dtype=dtype, device=x.device).reshape(-1, 1, 1, 1)
        sigma = sigma.expand(x.shape[0], 1, 1, 1)
        c_skip, c_out, c_in, c_noise = self.precond.coefficients(sigma)
        cond_in = cond_noise = None
        if cond is not None:
            sc = torch.as_tensor(sigma_cond, dtype=dtype, device=x.device).reshape(-1, 1, 1, 1)
            sc = sc.expand(x.shape[0], 1, 1, 1)
            _, _, c_in_c, c_noise_c = self.precond.coefficients(sc)
            cond_in = cond.to(dtype) * (c_in_c if self.cond_scaling else 1)
            cond_noise = c_noise_c.flatten()
        F_x = net(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels,
                  cond=cond_in, cond_noise_labels=cond_noise)
        return c_skip, c_out, F_x.to(dtype)


def check_unified(network: NetworkConfig, resolutions) -> None:
    """One unified network serves exactly the cascade's resolutions."""
    if tuple(sorted(resolutions)) != tuple(network.resolutions):
        raise ConfigError(f"network resolutions {network.resolutions} do not match stages {sorted(resolutions)}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
