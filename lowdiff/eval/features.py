"""Feature extractors for FID / IS: a common interface and batched extraction.

An extractor maps uint8 images (N, C, H, W) in [0, 255] to `(features (N, D), logits (N, K) or None)`.
Two implementations wrap networks: `ClassifierFeatures` (our offline Fashion-MNIST classifier,
`lowdiff.eval.classifier`) and `InceptionFeatures` (any module whose `forward(images_uint8)` returns
`(features, logits)`, e.g. the FID Inception-v3 of `lowdiff.eval.inception`, which is not imported here).
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..progress import image_bar


def weights_sha256(module: nn.Module) -> str:
    """A fingerprint of a network's weights: SHA-256 over every state-dict entry (name, dtype,
    shape, float32 values) in name order, so the same weights from any file give the same id."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureExtractor(ABC):
    """(uint8 images (N, C, H, W)) -> (features (N, feature_dim), logits (N, K) or None)."""

    name: str
    feature_dim: int

    @property
    def identity(self) -> dict:
        """What statistics files record of the extractor, so that FIDs are only ever computed
        between statistics of the same network: its feature space, dimension and weights."""
        return {"feature_space": self.name, "feature_dim": int(self.feature_dim), "extractor_sha256": self.sha256}

    @property
    def sha256(self) -> str:
        return ""

    @abstractmethod
    def __call__(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ...

    def check_images(self, shape) -> None:
        """Refuse images of `shape` (C, H, W) this feature space cannot measure (a ConfigError); any by default."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class _ModuleFeatures(FeatureExtractor):
    """Shared code of the wrappers: move inputs to the module's device, eval mode, no autograd."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @cached_property
    def sha256(self) -> str:
        return weights_sha256(self.model)

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        for b in self.model.buffers():
            return b.device
        return torch.device("cpu")

    def _prepare(self, images_uint8) -> torch.Tensor:
        x = torch.as_tensor(images_uint8)
        if x.ndim != 4:
            raise ValueError(f"{self.name} features need images (N, C, H, W), got shape {tuple(x.shape)}")
        return x.to(self.device)


class ClassifierFeatures(_ModuleFeatures):
    """Penultimate features and logits of a `ImageClassifier`."""

    name = "classifier"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.feature_dim = int(model.feature_dim)
        self.input_channels = int(getattr(model, "in_channels", 1))      # the images it was trained on

    def __call__(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode():
            return self.model.features_and_logits(self._prepare(images_uint8))

    def check_images(self, shape) -> None:
        """A classifier measures images of the side it was trained at only: others are refused in one line
        before any are made."""
        side = int(self.model.resolution)
        if tuple(shape[-2:]) != (side, side):
            raise ConfigError(f"the classifier feature space ({self.model.name}) measures {side}x{side} images, "
                              f"these are {shape[-1]}x{shape[-2]}: use --features inception (it resizes), or "
                              f"--classifier DIR trained on {shape[-1]}x{shape[-2]} images (`lowdiff eval classifier`)")


class InceptionFeatures(_ModuleFeatures):
    """Any module whose forward(images_uint8) returns (features, logits or None), e.g. FID Inception-v3."""

    name = "inception"

    def __init__(self, model: nn.Module, feature_dim: int | None = None):
        super().__init__(model)
        self.feature_dim = int(feature_dim if feature_dim is not None else getattr(model, "feature_dim", 2048))

    @cached_property
    def sha256(self) -> str:
        """The weights and the preprocessing: the same weights resized two ways are two feature spaces."""
        preprocessing = getattr(self.model, "preprocessing", "")
        return hashlib.sha256(f"{weights_sha256(self.model)}:{preprocessing}".encode()).hexdigest()

    def __call__(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode():
            out = self.model(self._prepare(images_uint8))
        if isinstance(out, torch.Tensor):
            return out, None
        features, logits = out
        return features, logits


def extract(extractor, images_uint8, batch: int = 256,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Run `extractor` over uint8 images (numpy array or tensor, (N, C, H, W)) in batches.

    Returns (features float64 (N, D), logits float64 (N, K) or None when the extractor gives no logits).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    images = torch.as_tensor(images_uint8) if isinstance(images_uint8, np.ndarray) else images_uint8
    if images.ndim != 4:
        raise ValueError(f"extract needs images (N, C, H, W), got shape {tuple(images.shape)}")
    feats, logits = [], []
    with torch.inference_mode(), image_bar(len(images), "features", disable=not progress) as bar:
        for start in range(0, len(images), batch):
            f, lg = extractor(images[start:start + batch])
            bar.update(len(f))
            feats.append(f.detach().to("cpu", torch.float64).numpy())
            if lg is not None:
                logits.append(lg.detach().to("cpu", torch.float64).numpy())
    dim = getattr(extractor, "feature_dim", 0)
    features = np.concatenate(feats) if feats else np.zeros((0, dim))
    if logits and len(logits) != len(feats):
        raise ValueError("extractor returned logits for some batches but not for others")
    return features, (np.concatenate(logits) if logits else None)
