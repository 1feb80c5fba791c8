"""The user-facing pipeline: `lowdiff.load(dir)` then `pipe(num, seed=...)`.

Loads a model directory (config.json + model.safetensors, no pickle, no network) and
runs the cascade of its stage plan, or a plan given per call.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import Preset, StageConfig
from .diffusion.cascade import CascadeResult, PerImageGenerator, sample_cascade
from .diffusion.denoiser import Denoiser
from .images import to_uint8
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
    def __init__(self, denoiser: Denoiser, device: str | torch.device = "cpu"):
        self.denoiser = denoiser.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)

    @property
    def preset(self) -> Preset:
        return self.denoiser.preset

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str = "cpu") -> "Pipeline":
        directory = Path(directory) if directory else BUNDLED
        preset = ckpt.load_config(directory)
        model = Denoiser(preset)
        state = ckpt.load_model_state(directory)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ckpt.CheckpointError(f"{directory}: weights do not match config.json "
                                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(model, device)

    def __call__(self, num: int | None = None, seed: int = 0, seeds: list[int] | None = None,
                 class_labels: list[int] | int | None = None, stages: list[StageConfig] | None = None,
                 batch: int = 64, progress: bool = False) -> Generated:
        """Generate images for seeds `seeds` (default seed .. seed+num-1). Class-conditional
        models draw each image's class from its seed unless `class_labels` is given."""
        seeds = list(seeds) if seeds is not None else list(range(seed, seed + (num or 1)))
        stages = stages or self.preset.stages
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
            result = sample_cascade(self.denoiser, stages, rng, self.preset.network.in_channels, onehot, progress=bar)
            images.append(to_uint8(result.images).cpu())
        bar.close()
        assert result is not None
        return Generated(torch.cat(images), seeds, labels_out or None, result.nfe,
                         {s.resolution: s.sigma_end for s in result.stages[:-1]})


def load(directory: str | Path | None = None, device: str = "cpu") -> Pipeline:
    """Load a trained model directory (or the bundled Fashion-MNIST model when None)."""
    return Pipeline.from_pretrained(directory, device)


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
            if key == "solver":
                setattr(stage, key, value)
            elif key in ("steps", "nfe"):
                setattr(stage, key, None if value.lower() == "none" else int(value))
            else:
                setattr(stage, key, float(value))
    return stages
