"""The in-memory image dataset every reader returns: one uint8 (N, C, H, W) array with
optional int64 labels and class names."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DatasetError

__all__ = ["DatasetError", "ImageDataset", "pad_images"]


LATENT_MANIFEST = "latents.json"         # the file that makes a folder a latent dataset (`lowdiff dataset encode`)


class ImageDataset(torch.utils.data.Dataset):
    """In-memory uint8 images (N, C, H, W) with optional int64 labels (N,)."""
    latent = False                       # images; a LatentDataset (lowdiff/data/latents.py) holds VAE latents

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, name: str,
                 class_names: list[str] | None = None):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise DatasetError(f"dataset {name}: images must be a uint8 (N, C, H, W) array")
        n, c, h, w = images.shape
        if c not in (1, 3):
            raise DatasetError(f"dataset {name}: images have {c} channels; only 1 (grayscale) or 3 (RGB) are supported")
        if h != w:
            raise DatasetError(f"dataset {name}: images are {w}x{h}; they must be square")
        if labels is not None:
            labels = _check_labels(np.asarray(labels), n, name, class_names)
        self.images = np.ascontiguousarray(images)
        self.labels = labels
        self.name = name
        self.resolution, self.channels = h, c
        self.class_names = list(class_names) if class_names is not None else None
        if labels is None:
            self.num_classes = 0
        elif self.class_names is not None:
            self.num_classes = len(self.class_names)
        else:
            self.num_classes = int(labels.max()) + 1 if len(labels) else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[i]) if self.labels is not None else -1
        return torch.tensor(self.images[i]), label

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, {len(self)} images, {self.channels}x{self.resolution}x{self.resolution}, "
                f"{self.num_classes} classes)")


def _check_labels(labels: np.ndarray, n: int, name: str, class_names: list[str] | None) -> np.ndarray:
    """Validate a label vector against the image count and class names; return it as int64."""
    if labels.shape != (n,):
        raise DatasetError(f"dataset {name}: {n} images but labels have shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DatasetError(f"dataset {name}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise DatasetError(f"dataset {name}: negative label {labels.min()}")
    if n and class_names is not None and labels.max() >= len(class_names):
        raise DatasetError(f"dataset {name}: label {labels.max()} but only {len(class_names)} class names")
    return labels


def pad_images(images: np.ndarray, size: int, name: str) -> np.ndarray:
    """Zero-pad (N, C, H, H) images to (N, C, size, size), centred (extra pixel at the bottom/right)."""
    res = images.shape[-1]
    if size < res:
        raise DatasetError(f"cannot pad {name} from {res}x{res} to {size}x{size}: pad_to must be >= {res}")
    before = (size - res) // 2
    after = size - res - before
    return np.pad(images, ((0, 0), (0, 0), (before, after), (before, after)))
