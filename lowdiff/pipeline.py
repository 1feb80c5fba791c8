"""The user-facing pipeline: `lowdiff.load(dir)` then `pipe(num, seed=...)`.

Loads a model directory (config.json + model.safetensors, no pickle, no network; see
lowdiff/storage.py) and runs the cascade of its stage plan, or a plan given per call.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import storage
from .config import Preset
from .diffusion.cascade import PerImageGenerator, sample_cascade
from .diffusion.denoiser import Denoiser
from .diffusion.plan import StagePlan
from .errors import ConfigError
from .images import to_uint8
from .inference import FastDenoiser, InferenceOptions


@dataclass
class Generated:
    images: torch.Tensor                  # uint8 (N, C, H, W)
    seeds: list[int]
    class_labels: list[int] | None
    nfe: dict[int, int]                   # per stage resolution
    truncation_sigma: dict[int, float]    # per non-final stage: where it stopped


class Pipeline:
    def __init__(self, denoiser: Denoiser, preset: Preset, device: str | torch.device = "cpu",
                 options: InferenceOptions | None = None, vae: str | Path | None = None):
        self.preset = preset
        self.denoiser = denoiser.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.fast = FastDenoiser(self.denoiser, options, self.device)
        self.vae, self._decoder = vae, None
        self.source = "model.safetensors"          # where the weights came from (set by from_pretrained)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Cascade output -> images in [-1, 1]: the VAE decodes latent models' samples
        (the preset's VAE, or `vae` given at load time)."""
        if self.preset.latent is None:
            return x
        if self._decoder is None:
            from .data.latents import LatentDecoder
            self._decoder = LatentDecoder(self.preset.latent, self.device, self.vae)
        return self._decoder(x)

    @property
    def options(self) -> InferenceOptions:
        return self.fast.options

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str = "cpu",
                        options: InferenceOptions | None = None, vae: str | Path | None = None) -> "Pipeline":
        preset, model, source = storage.from_pretrained(storage.model_dir(directory))
        pipe = cls(model, preset, device, options, vae)
        pipe.source = source
        return pipe

    @property
    def image_channels(self) -> int:
        """Channels of the images this pipeline returns (decoded ones for a latent model)."""
        latent = self.preset.latent
        return latent.image_channels if latent is not None else self.preset.network.in_channels

    def __call__(self, num: int | None = None, seed: int = 0, seeds: list[int] | None = None,
                 class_labels: list[int] | int | None = None, stages: StagePlan | list | None = None,
                 batch: int = 64, progress: bool = False,
                 on_batch: Callable[[torch.Tensor, list[int], list[int] | None], None] | None = None) -> Generated:
        """Generate images for seeds `seeds` (default seed .. seed+num-1). Class-conditional
        models draw each image's class from its seed unless `class_labels` is given.
        `on_batch(images, seeds, labels)` sees each batch as soon as it is made."""
        if num is not None and num < 1:
            raise ConfigError(f"num must be >= 1, got {num}")
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        seeds = list(seeds) if seeds is not None else list(range(seed, seed + (num or 1)))
        plan = StagePlan(stages) if stages is not None else self.preset.stages
        self.preset.check_plan(plan)
        label_dim = self.preset.network.label_dim
        if class_labels is not None and not label_dim:
            raise ConfigError("this model is unconditional: class labels are not accepted")
        if isinstance(class_labels, int):
            class_labels = [class_labels] * len(seeds)
        if class_labels is not None:
            if len(class_labels) != len(seeds) or not all(0 <= c < label_dim for c in class_labels):
                raise ConfigError(f"need one class label in [0, {label_dim}) per image")
        bar = tqdm(total=plan.total_nfe * ((len(seeds) + batch - 1) // batch), unit="nfe", disable=not progress,
                   desc="sample")
        images, labels_out, result = [], [], None
        for start in range(0, len(seeds), batch):
            chunk = seeds[start:start + batch]
            rng = PerImageGenerator(chunk, self.device)
            onehot, labels = None, None
            if label_dim:
                labels = (torch.tensor(class_labels[start:start + batch], device=self.device)
                          if class_labels is not None else rng.randint(label_dim))
                onehot = F.one_hot(labels.long(), label_dim).float()
                labels = labels.tolist()
                labels_out += labels
            result = sample_cascade(self.fast, plan, rng, self.preset.network.in_channels, onehot, progress=bar)
            images.append(to_uint8(self.decode(result.images)).cpu())
            if on_batch is not None:
                on_batch(images[-1], chunk, labels)
        bar.close()
        return Generated(torch.cat(images), seeds, labels_out or None, result.nfe,
                         {s.resolution: s.truncation_sigma for s in result.stages[:-1]})


def load(directory: str | Path | None = None, device: str = "cpu", options: InferenceOptions | None = None,
         vae: str | Path | None = None) -> Pipeline:
    """Load a model directory, `bundled:NAME` (lowdiff/assets), or the bundled Fashion-MNIST
    LowDiff model when None; `options` are the inference speed switches (compile, precision,
    ...); `vae` overrides the VAE a latent model decodes with."""
    return Pipeline.from_pretrained(directory, device, options, vae)
