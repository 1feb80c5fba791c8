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


class BatchNoise:
    """Randomness of one training batch, drawn for the whole global batch from one
    generator and sliced to this process's rows. A batch split across ranks or
    accumulation rounds therefore sees exactly the noise a single process would."""

    def __init__(self, generator: torch.Generator | None, global_batch: int, rows: slice = slice(None),
                 device: torch.device | str = "cpu"):
        self.generator, self.global_batch, self.rows, self.device = generator, global_batch, rows, device

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.global_batch, *shape, generator=self.generator, device=self.device)[self.rows]

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(self.global_batch, *shape, generator=self.generator, device=self.device)[self.rows]

    def sigma(self, precond) -> torch.Tensor:
        return precond.sample_sigma(self.global_batch, self.generator, self.device)[self.rows]


def multires_loss(model, images: torch.Tensor, class_labels: torch.Tensor | None = None,
                  augment_labels: torch.Tensor | None = None, weights: dict[int, float] | None = None,
                  noise: BatchNoise | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Returns (total loss, {resolution: loss}) for a batch of images in [-1, 1]; each
    loss is summed over pixels and averaged over the batch rows given."""
    precond, resolutions = model.precond, model.resolutions
    noise = noise or BatchNoise(None, images.shape[0], device=images.device)
    clean = pyramid.build(images, resolutions)
    per_res: dict[int, torch.Tensor] = {}
    total = images.new_zeros(())
    for i, r in enumerate(resolutions):
        y = clean[r]
        sigma = noise.sigma(precond)
        x = y + noise.randn(*y.shape[1:]) * sigma
        cond = sigma_c = None
        if i > 0:
            low = clean[resolutions[i - 1]]
            sigma_c = noise.sigma(precond)
            cond = pyramid.upsample(low + noise.randn(*low.shape[1:]) * sigma_c, r)
        denoised = model(x, sigma, class_labels, cond=cond, sigma_cond=sigma_c, augment_labels=augment_labels)
        loss = (precond.loss_weight(sigma) * (denoised - y) ** 2).sum(dim=(1, 2, 3)).mean()
        per_res[r] = loss
        total = total + (weights or {}).get(r, 1.0) * loss
    return total, per_res


def drop_labels(class_labels: torch.Tensor | None, p: float, noise: BatchNoise) -> torch.Tensor | None:
    """Class-label dropout for classifier-free guidance: with probability p an image's
    one-hot row becomes zero (the null class) at every resolution of the step. Drawn from
    the batch's generator, so N processes drop exactly the labels one process would."""
    if class_labels is None or not p:
        return class_labels
    keep = noise.rand(1) >= p
    return class_labels * keep.to(class_labels.dtype)


class LossModule(torch.nn.Module):
    """The whole multi-resolution loss as one forward pass, so that DistributedDataParallel
    sees one forward per backward that uses every parameter."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, class_labels=None, augment_labels=None, weights=None, noise=None):
        preset = self.model.preset
        noise = noise or BatchNoise(None, images.shape[0], device=images.device)
        class_labels = drop_labels(class_labels, preset.network.label_dropout, noise)
        if preset.objective == "flow":
            from .flow import flow_multires_loss
            return flow_multires_loss(self.model, images, class_labels, augment_labels, weights, noise,
                                      cosine=preset.train.cosine_loss)
        return multires_loss(self.model, images, class_labels, augment_labels, weights, noise)
