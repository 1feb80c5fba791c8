"""The multi-resolution training loss with truncation augmentation (paper Sec. 3.2, 3.4,
Alg. 1; EDM loss.py for the per-resolution form), for every preconditioning.

For every resolution r of the cascade, with P the model's preconditioning:
  y_r      = pyramid.downsample(y, r)                        clean target
  sigma    ~ P.sample_sigma,  x = P.perturb(y_r, sigma, n)   the usual single-resolution input
  r > r_0:  cond, sigma_c = truncation_augment(y_{r/2})        the condition (below)
  L_r      = P.loss(D, x, sigma, y_r, n, cond, sigma_c)        EDM kinds: lambda(sigma) |D - y_r|^2
                                                               summed over pixels; flow: velocity MSE
The total is sum_r w_r * mean_batch(L_r). The lowest resolution is unconditional. With a
single stage this is exactly EDM's loss (or LightningDiT's flow loss). The per-stage term is an
objective's (`DiffusionObjective` above; consistency tuning swaps in its own,
lowdiff/diffusion/consistency.py), the pyramid and the conditions stay the same.
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


def truncation_augment(precond, low: torch.Tensor, resolution: int,
                       noise: BatchNoise) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncation augmentation (paper Sec. 3.2, after CDM): the clean lower-resolution image
    perturbed at its own, independently drawn noise level sigma_c, upsampled to `resolution`:
    what a stage truncated at sigma_c hands to the next one. Returns (cond, sigma_c)."""
    sigma_c = noise.sigma(precond)
    return pyramid.upsample(precond.perturb(low, sigma_c, noise.randn(*low.shape[1:])), resolution), sigma_c


class DiffusionObjective:
    """A stage's loss term: the denoising loss of the model's preconditioning (`P.loss`). Another
    objective (consistency tuning, lowdiff/diffusion/consistency.py) has the same two methods."""

    def draw(self, precond, y: torch.Tensor, resolution: int, noise: BatchNoise):
        """The randomness of one stage, drawn before its condition's: (sigma, n)."""
        return noise.sigma(precond), noise.randn(*y.shape[1:])

    def loss(self, model, y, drawn, class_labels, cond, sigma_cond, augment_labels) -> torch.Tensor:
        """Per-sample loss on the clean y_r with the draw of `draw`."""
        sigma, n = drawn
        x = model.precond.perturb(y, sigma, n)
        return model.precond.loss(model, x, sigma, y, n, class_labels, cond, sigma_cond, augment_labels)


def multires_loss(model, images: torch.Tensor | dict[int, torch.Tensor], class_labels: torch.Tensor | None = None,
                  augment_labels: torch.Tensor | None = None, weights: dict[int, float] | None = None,
                  noise: BatchNoise | None = None, objective=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Returns (total loss, {resolution: loss}) for a batch in [-1, 1]: the clean top
    resolution (the pyramid is built here) or the pyramid itself {r: y_r}, as latent datasets
    store it. `model` is a Denoiser; each loss is averaged over the batch rows given.
    `objective`: each stage's loss term (default the denoising loss, `DiffusionObjective`)."""
    precond, resolutions = model.precond, model.resolutions
    objective = objective or DiffusionObjective()
    top = images if isinstance(images, torch.Tensor) else images[resolutions[-1]]
    noise = noise or BatchNoise(None, top.shape[0], device=top.device)
    clean = pyramid.build(images, resolutions) if isinstance(images, torch.Tensor) else images
    per_res: dict[int, torch.Tensor] = {}
    total = top.new_zeros(())
    for i, r in enumerate(resolutions):
        y = clean[r]
        drawn = objective.draw(precond, y, r, noise)
        cond = sigma_c = None
        if i > 0:
            cond, sigma_c = truncation_augment(precond, clean[resolutions[i - 1]], r, noise)
        loss = objective.loss(model, y, drawn, class_labels, cond, sigma_c, augment_labels).mean()
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

    def __init__(self, model, weights: dict[int, float] | None = None, label_dropout: float = 0.0,
                 objective=None):
        super().__init__()
        self.model, self.weights, self.label_dropout = model, dict(weights or {}), label_dropout
        self.objective = objective

    def forward(self, images, class_labels=None, augment_labels=None, noise=None):
        top = images if isinstance(images, torch.Tensor) else next(iter(images.values()))
        noise = noise or BatchNoise(None, top.shape[0], device=top.device)
        class_labels = drop_labels(class_labels, self.label_dropout, noise)
        return multires_loss(self.model, images, class_labels, augment_labels, self.weights, noise, self.objective)
