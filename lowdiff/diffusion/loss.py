"""Multi-resolution training loss with truncation augmentation (paper Sec. 3.2, 3.4,
Alg. 1; EDM loss.py for the per-resolution form).

For every resolution r of the cascade:
  y_r      = pyramid.downsample(y, r)                        clean target
  sigma    ~ p(sigma),  x = y_r + sigma * eps                  the usual EDM loss input
  r > r_0:  sigma_c ~ p(sigma) independently,
            cond = upsample(downsample(y_r, r/2) + sigma_c * eps', r)   truncation augmentation
  L_r      = lambda(sigma) * || D(x; sigma, cond, sigma_c) - y_r ||^2, summed over pixels
The total is sum_r w_r * mean_batch(L_r). The lowest resolution is unconditional. With a
single stage this is exactly EDM's loss (summed over C*H*W, averaged over the batch).
"""
from __future__ import annotations

import torch

from . import pyramid
from .denoiser import Denoiser


def multires_loss(model: Denoiser, images: torch.Tensor, class_labels: torch.Tensor | None = None,
                  augment_labels: torch.Tensor | None = None, weights: dict[int, float] | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Returns (total loss, {resolution: loss}) for a batch of images in [-1, 1]."""
    precond, resolutions = model.precond, model.resolutions
    device, n = images.device, images.shape[0]
    clean = pyramid.build(images, resolutions)
    per_res: dict[int, torch.Tensor] = {}
    total = images.new_zeros(())
    for i, r in enumerate(resolutions):
        y = clean[r]
        sigma = precond.sample_sigma(n, generator, device)
        x = y + torch.randn(y.shape, generator=generator, device=device) * sigma
        cond = sigma_c = None
        if i > 0:
            low = clean[resolutions[i - 1]]
            sigma_c = precond.sample_sigma(n, generator, device)
            cond = pyramid.upsample(low + torch.randn(low.shape, generator=generator, device=device) * sigma_c, r)
        denoised = model(x, sigma, class_labels, cond=cond, sigma_cond=sigma_c, augment_labels=augment_labels)
        loss = (precond.loss_weight(sigma) * (denoised - y) ** 2).sum(dim=(1, 2, 3)).mean()
        per_res[r] = loss
        total = total + (weights or {}).get(r, 1.0) * loss
    return total, per_res
