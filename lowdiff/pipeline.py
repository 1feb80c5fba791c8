"""The user-facing pipeline: `lowdiff.load(dir)` then `pipe(num, seed=...)`.

Loads a model directory (config.json + model.safetensors, no pickle, no network) and
runs the cascade of its stage plan, or a plan given per call.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import ConfigError, Preset, StageConfig, _floats, _json_default
from .diffusion.cascade import CascadeResult, PerImageGenerator, sample_cascade
from .diffusion.denoiser import Denoiser
from .images import to_uint8
from .inference import FastDenoiser, InferenceOptions
from .train import checkpoint as ckpt

BUNDLED = Path(__file__).parent / "assets" / "fashion-cond"


@dataclass
class Generated:
    images: torch.Tensor            # uint8 (N, C, H, W)
    seeds: list[int]
    class_labels: list[int] | None
    nfe: dict[int, int]             # per stage resolution
    sigma_trunc: dict[int, float]   # per non-final stage: where it stopped


class Pipeline:
    def __init__(self, denoiser: Denoiser, device: str | torch.device = "cpu", options: InferenceOptions | None = None,
                 vae: str | Path | None = None):
        self.denoiser = denoiser.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.fast = FastDenoiser(self.denoiser, options, self.device)
        self.vae, self._decoder = vae, None

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

    @property
    def preset(self) -> Preset:
        return self.denoiser.preset

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str = "cpu",
                        options: InferenceOptions | None = None, vae: str | Path | None = None) -> "Pipeline":
        directory = Path(directory) if directory else BUNDLED
        preset = ckpt.load_config(directory)
        model = Denoiser(preset)
        state = ckpt.load_model_state(directory)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ckpt.CheckpointError(f"{directory}: weights do not match config.json "
                                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(model, device, options, vae)

    def __call__(self, num: int | None = None, seed: int = 0, seeds: list[int] | None = None,
                 class_labels: list[int] | int | None = None, stages: list[StageConfig] | None = None,
                 batch: int = 64, progress: bool = False) -> Generated:
        """Generate images for seeds `seeds` (default seed .. seed+num-1). Class-conditional
        models draw each image's class from its seed unless `class_labels` is given."""
        seeds = list(seeds) if seeds is not None else list(range(seed, seed + (num or 1)))
        stages = stages or self.preset.stages
        check_plan(self.preset, stages)
        label_dim = self.preset.network.label_dim
        if class_labels is not None and not label_dim:
            raise ValueError("this model is unconditional: class labels are not accepted")
        if isinstance(class_labels, int):
            class_labels = [class_labels] * len(seeds)
        if class_labels is not None:
            if len(class_labels) != len(seeds) or not all(0 <= c < label_dim for c in class_labels):
                raise ValueError(f"need one class label in [0, {label_dim}) per image")
        total_nfe = sum(s.planned_nfe(i == len(stages) - 1) for i, s in enumerate(stages))
        bar = tqdm(total=total_nfe * ((len(seeds) + batch - 1) // batch), unit="nfe", disable=not progress,
                   desc="sample")
        images, labels_out, result = [], [], None
        for start in range(0, len(seeds), batch):
            chunk = seeds[start:start + batch]
            rng = PerImageGenerator(chunk, self.device)
            onehot = None
            if label_dim:
                labels = (torch.tensor(class_labels[start:start + batch], device=self.device)
                          if class_labels is not None else rng.randint(label_dim))
                onehot = F.one_hot(labels.long(), label_dim).float()
                labels_out += labels.tolist()
            result = sample_cascade(self.fast, stages, rng, self.preset.network.in_channels, onehot, progress=bar)
            images.append(to_uint8(self.decode(result.images)).cpu())
        bar.close()
        assert result is not None
        return Generated(torch.cat(images), seeds, labels_out or None, result.nfe,
                         {s.resolution: s.sigma_end for s in result.stages[:-1]})


def load(directory: str | Path | None = None, device: str = "cpu", options: InferenceOptions | None = None,
         vae: str | Path | None = None) -> Pipeline:
    """Load a trained model directory (or the bundled Fashion-MNIST model when None);
    `options` are the inference speed switches (compile, precision, ...); `vae` overrides
    the VAE a latent model decodes with."""
    return Pipeline.from_pretrained(directory, device, options, vae)


def check_plan(preset: Preset, stages: list[StageConfig]) -> None:
    """A stage plan must fit the model: the same resolutions, valid schedules."""
    if [s.resolution for s in stages] != preset.resolutions:
        raise ConfigError(f"the stage plan has resolutions {[s.resolution for s in stages]}, the model "
                          f"{preset.resolutions}")
    preset.replace(stages=list(stages)).validate()


def save_plan(path: str | Path, stages: list[StageConfig], **info) -> None:
    """Write a stage plan (`lowdiff sample --plan FILE`): JSON with the StageConfig fields."""
    rows = [{k: "inf" if v == float("inf") else v for k, v in dataclasses.asdict(s).items()} for s in stages]
    Path(path).write_text(json.dumps({"stages": rows, **info}, indent=2, default=_json_default) + "\n")


def load_plan(path: str | Path) -> list[StageConfig]:
    """Read a plan file: {"stages": [...]} or a bare list of stages."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not a JSON plan file ({e})") from None
    stages = data["stages"] if isinstance(data, dict) else data
    fields = set(StageConfig.__dataclass_fields__)
    for s in stages:
        if not isinstance(s, dict) or "resolution" not in s or set(s) - fields:
            raise ConfigError(f"{path}: every stage needs 'resolution' and only the keys {', '.join(sorted(fields))}")
    return [StageConfig(**_floats(s)) for s in stages]


def override_stages(stages: list[StageConfig], overrides: list[str]) -> list[StageConfig]:
    """Apply 'RES:key=value[,key=value]' overrides, e.g. '16:nfe=13,sigma_max=50'."""
    stages = copy.deepcopy(stages)
    by_res = {s.resolution: s for s in stages}
    fields = {f for f in StageConfig.__dataclass_fields__ if f != "resolution"}
    for text in overrides:
        res_text, _, assignments = text.partition(":")
        if not res_text.isdigit() or int(res_text) not in by_res or not assignments:
            raise ValueError(f"stage override {text!r}: expected RES:key=value with RES one of {sorted(by_res)}")
        stage = by_res[int(res_text)]
        for item in assignments.split(","):
            key, _, value = item.partition("=")
            if key not in fields or not value:
                raise ValueError(f"stage override {item!r}: keys are {', '.join(sorted(fields))}")
            if key in ("solver", "schedule"):
                setattr(stage, key, value)
            elif key in ("steps", "nfe"):
                setattr(stage, key, None if value.lower() == "none" else int(value))
            else:
                setattr(stage, key, float(value))
    return stages


def with_solver(stages: list[StageConfig], solver: str) -> list[StageConfig]:
    """Every stage with `solver`, at an unchanged NFE: the schedule gets the fewest steps
    whose full length costs at least as many evaluations as before (a Heun step costs two,
    so N Heun steps become 2N - 1 steps of a one-evaluation solver over the same sigma
    range); the truncation budget `nfe` is kept."""
    stages = copy.deepcopy(stages)
    for i, s in enumerate(stages):
        final = i == len(stages) - 1
        target = s.schedule_nfe(final)
        s.solver, s.steps = solver, 1 if final else 2
        while s.schedule_nfe(final) < target:
            s.steps += 1
    return stages
