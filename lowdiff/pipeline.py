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

from . import storage
from .checks import resolve_device
from .config import Preset
from .diffusion.cascade import PerImageGenerator, sample_cascade
from .diffusion.denoiser import Denoiser
from .diffusion.plan import StagePlan
from .distributed import SINGLE, World
from .errors import ConfigError
from .images import to_uint8
from .inference import FastDenoiser, InferenceOptions
from .plans import ModelPlans, NamedPlan
from .progress import EvaluationTicks, image_bar
from .seeds import Seeds


CHECKED_PLANS = 16           # plans a pipeline remembers having checked


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
        self.plans = ModelPlans.of_config(preset.stages)
        self._checked: list[StagePlan] = []         # the last plans `plan` checked (the model's own are)
        if vae is not None:                        # given: loaded and checked now, before any sampling
            if preset.latent is None:
                raise ConfigError(f"VAE {vae}: {preset.name} is a pixel-space model, which decodes nothing; drop the "
                                  "VAE (it is for latent models)")
            self._decoder = self._latent_decoder()

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Cascade output -> images in [-1, 1]: the VAE decodes latent models' samples
        (the preset's VAE, or `vae` given at load time)."""
        if self.preset.latent is None:
            return x
        if self._decoder is None:
            self._decoder = self._latent_decoder()
        return self._decoder(x)

    def _latent_decoder(self):
        """The VAE decoder of a latent model, whose latents must have the network's channels and whose
        downsampling factor must take the model's latents to its images (latent.image_resolution)."""
        from .data.latents import LatentDecoder
        from .data.vae import downsampling_factor
        decoder = LatentDecoder(self.preset.latent, self.device, self.vae)
        which = f"--vae {self.vae}" if self.vae is not None else f"VAE {self.preset.latent.vae}"
        channels, wanted = decoder.vae.config.latent_channels, self.preset.network.in_channels
        if channels != wanted:
            raise ConfigError(f"{which}: its latents have {channels} channels, the model samples {wanted}; use the VAE "
                              "the model was trained with")
        factor, side = downsampling_factor(decoder.vae.config.block_out_channels), self.preset.resolutions[-1]
        if factor * side != self.preset.latent.image_resolution:
            raise ConfigError(f"{which}: a factor-{factor} autoencoder decodes the model's {side}x{side} latents to "
                              f"{factor * side}x{factor * side}, the model was trained on "
                              f"{self.preset.latent.image_resolution}x{self.preset.latent.image_resolution} images; "
                              "use the VAE the model was trained with")
        return decoder

    @property
    def options(self) -> InferenceOptions:
        return self.fast.options

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str | None = None,
                        options: InferenceOptions | None = None, vae: str | Path | None = None) -> "Pipeline":
        directory = storage.model_dir(directory)
        config = storage.read_config(directory)                    # read once, for the weights and the plans
        preset, model, source = storage.from_pretrained(directory, config)
        pipe = cls(model, preset, resolve_device(device), options, vae)
        pipe.source = source
        pipe.plans = ModelPlans.read(directory, config)
        return pipe

    @property
    def default_plan(self) -> NamedPlan:
        """The plan a call without `stages` samples with: the fastest of the model's measured plans
        within its FID noise of the best (lowdiff/plans.py), else config.json's."""
        return self.plans.default()

    @property
    def image_channels(self) -> int:
        """Channels of the images this pipeline returns (decoded ones for a latent model)."""
        return self.image_shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this pipeline returns (decoded ones for a latent model)."""
        latent, net = self.preset.latent, self.preset.network
        if latent is not None:
            return latent.image_channels, latent.image_resolution, latent.image_resolution
        return net.in_channels, net.img_resolution, net.img_resolution

    def __call__(self, num: int | None = None, seed: int = 0, seeds=None,
                 class_labels: list[int] | int | None = None, stages: StagePlan | list | str | None = None,
                 batch: int = 64, progress: bool = False,
                 on_batch: Callable[[torch.Tensor, list[int], list[int] | None], None] | None = None) -> Generated:
        """Generate images for seeds `seeds` (default seed .. seed+num-1). Class-conditional
        models draw each image's class from its seed unless `class_labels` is given. `stages`: a
        plan, the name of one of the model's plans (`pipe.plans`), or None for `pipe.default_plan`.
        `on_batch(images, seeds, labels)` sees each batch as soon as it is made.

        Examples:
            >>> pipe = lowdiff.load("bundled:fashion-lowdiff-cond")
            >>> out = pipe(16, seed=0)                      # seeds 0..15, classes drawn from the seeds
            >>> out.images.shape, out.images.dtype          # (torch.Size([16, 1, 32, 32]), torch.uint8)
            >>> out = pipe(16, stages="paper")              # one of the model's named plans (pipe.plans.plans)
            >>> out = pipe(seeds=[3, 7], class_labels=[0, 9], stages=pipe.preset.stages.with_solver("dpmpp2m"))
            >>> out.nfe, out.truncation_sigma               # NFE per stage, where each low stage stopped
        """
        if num is not None and num < 1:
            raise ConfigError(f"num must be >= 1, got {num}")
        seeds = Seeds.count(seed, num or 1) if seeds is None else seeds
        images, labels_out, seeds_out, reports = [], [], [], []
        for imgs, chunk, labels, reports in self.stream(seeds, class_labels, stages, batch, progress=progress):
            images.append(imgs)
            seeds_out += chunk
            labels_out += labels or []
            if on_batch is not None:
                on_batch(imgs, chunk, labels)
        return Generated(torch.cat(images), seeds_out, labels_out or None, {s.resolution: s.nfe for s in reports},
                         {s.resolution: s.truncation_sigma for s in reports[:-1]})

    def stream(self, seeds, class_labels: list[int] | int | None = None,
               stages: StagePlan | list | str | None = None,
               batch: int = 64, world: World = SINGLE, progress: bool = False):
        """Yield (uint8 images, seeds, class labels or None, per-stage reports) batch by batch in
        seed order. Seeds are taken lazily (a `Seeds` range list or any sequence of ints). Under
        torchrun (`world`), batch i is made by rank i mod N and rank 0 yields every batch in
        order; the other ranks yield nothing."""
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        plan = self.plan(stages)
        self.check_class_labels(class_labels, len(seeds))
        num_batches = (len(seeds) + batch - 1) // batch
        bar = image_bar(len(seeds), "sample", disable=not progress or not world.is_main)

        def make(i: int):
            chunk = list(seeds[i * batch:(i + 1) * batch])
            labels = class_labels[i * batch:(i + 1) * batch] if isinstance(class_labels, list) else class_labels
            images, labels, result = self.sample_batch(chunk, labels, plan, bar if world.size == 1 else None)
            return images, chunk, labels, result.stages

        for i in world.rounds(num_batches):
            for item in world.gather(make(i) if i is not None else None) or []:
                if item is not None:
                    if world.size > 1:
                        bar.update(len(item[1]))
                    yield item
        bar.close()

    def plan(self, stages: StagePlan | list | str | None = None) -> StagePlan:
        """The stage plan to sample with (a plan, one of the model's by name, or its default when
        None), checked against the model."""
        if stages is None or isinstance(stages, str):
            stages = self.default_plan.stages if stages is None else self.plans.get(stages).stages
        plan = StagePlan.of(stages)
        known = [*self._checked, *(named.stages for named in self.plans.plans.values())]   # checked when read
        if not any(plan is checked for checked in known):       # plans are immutable: each checked once
            self.preset.check_plan(plan)
            self._checked = [*self._checked[1 - CHECKED_PLANS:], plan]
        return plan

    def check_class_labels(self, class_labels: list[int] | int | None, num: int | None = None) -> None:
        """Class labels this model takes: None, one class for every image, or one per image (`num`)."""
        label_dim = self.preset.network.label_dim
        if class_labels is None:
            return
        if not label_dim:
            raise ConfigError("this model is unconditional: class labels are not accepted")
        labels = [class_labels] if isinstance(class_labels, int) else class_labels
        if isinstance(class_labels, list) and num is not None and len(labels) != num:
            raise ConfigError(f"need one class label per image: {len(labels)} labels for {num} images")
        if not all(0 <= c < label_dim for c in labels):
            raise ConfigError(f"the model has classes 0..{label_dim - 1}")

    def sample_batch(self, seeds: list[int], class_labels: list[int] | int | None, plan: StagePlan, bar=None,
                     handed_over=None):
        """One batch: (uint8 images, class labels or None, the cascade's result). Class labels are
        drawn from the seeds when not given; `bar` (an image progress bar) advances with the
        network evaluations; `handed_over` (a diagnosis) stands in for the stages under the final
        one (`sample_cascade`)."""
        rng = PerImageGenerator(seeds, self.device)
        onehot, labels = None, None
        label_dim = self.preset.network.label_dim
        if label_dim:
            labels = (torch.tensor(class_labels if isinstance(class_labels, list) else [class_labels] * len(seeds),
                                   device=self.device) if class_labels is not None else rng.randint(label_dim))
            onehot = F.one_hot(labels.long(), label_dim).float()
            labels = labels.tolist()
        ticks = EvaluationTicks(bar, len(seeds), plan.total_nfe)
        result = sample_cascade(self.fast, plan, rng, self.preset.network.in_channels, onehot, progress=ticks,
                                precond=self.preset.precond, handed_over=handed_over)
        images = to_uint8(self.decode(result.images)).cpu()
        ticks.done()
        return images, labels, result


def load(directory: str | Path | None = None, device: str | None = None, options: InferenceOptions | None = None,
         vae: str | Path | None = None) -> Pipeline:
    """Load a model directory, `bundled:NAME` (lowdiff/assets), or the bundled Fashion-MNIST
    LowDiff model when None, on `device` (default `auto`: cuda when a GPU is visible, else cpu);
    `options` are the inference speed switches (compile, precision, ...); `vae` overrides the
    VAE a latent model decodes with. Calls sample with the model's default plan
    (`pipe.default_plan`) unless given another.

    Examples:
        >>> import lowdiff
        >>> pipe = lowdiff.load()                                   # bundled:fashion-lowdiff-cond, offline
        >>> pipe.default_plan.name, list(pipe.plans.plans)           # ('fast', ['config', 'paper', 'best', ...])
        >>> pipe = lowdiff.load("runs/fm")                           # config.json + model.safetensors
        >>> from lowdiff.inference import InferenceOptions
        >>> pipe = lowdiff.load("bundled:cifar-lowdiff-cond", options=InferenceOptions(precision="bf16"))
        >>> grid = pipe(40, seed=0).images                           # uint8 (40, 3, 32, 32)
    """
    return Pipeline.from_pretrained(directory, device, options, vae)
