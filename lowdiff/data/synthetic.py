"""Deterministic synthetic shapes, for tests and smoke runs (`synthetic[:N[:RES]]`)."""
from __future__ import annotations

import numpy as np

from .base import DatasetError, ImageDataset


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, size: float) -> np.ndarray:
    """Boolean mask of one of five shapes centred at (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    r = np.sqrt(dy ** 2 + dx ** 2)
    period = max(2.0, size / 2)
    inside = (np.abs(dy) <= size) & (np.abs(dx) <= size)
    masks = [inside,                                                      # square
             r <= size,                                                   # disc
             (r <= size) & (r >= size * 0.55),                            # ring
             inside & ((yy // period) % 2 == 0),                          # horizontal stripes
             (np.abs(dy) <= size * 0.3) & (np.abs(dx) <= size) | (np.abs(dx) <= size * 0.3) & (np.abs(dy) <= size)]
    return masks[kind % len(masks)]


def make_synthetic(num: int = 256, resolution: int = 32, channels: int = 1, num_classes: int = 10,
                   seed: int = 0) -> ImageDataset:
    """Deterministic class-dependent shapes on a dark background (for tests); labels cycle 0..num_classes-1."""
    if num < 1 or resolution < 4 or channels not in (1, 3) or num_classes < 0:
        raise DatasetError(f"make_synthetic: need num >= 1, resolution >= 4, channels 1 or 3 and num_classes >= 0; "
                           f"got num={num}, resolution={resolution}, channels={channels}, num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
    labels = np.arange(num, dtype=np.int64) % max(num_classes, 1)
    images = np.empty((num, channels, resolution, resolution), np.uint8)
    for i, label in enumerate(labels):
        size = resolution * rng.uniform(0.2, 0.35)
        cy, cx = rng.uniform(size, resolution - size, size=2)
        mask = _shape_mask(int(label), yy, xx, cy, cx, size)
        brightness = 150 + 100 * (label // 5 % 2)
        colour = np.full(channels, brightness) if channels == 1 else \
            brightness * np.array([1.0, (label % 3) / 2, ((label + 1) % 4) / 3]) + 20
        background = rng.integers(0, 24, size=(channels, 1, 1))
        images[i] = np.where(mask, colour[:, None, None], background).clip(0, 255).astype(np.uint8)
    if num_classes == 0:
        return ImageDataset(images, None, "synthetic")
    return ImageDataset(images, labels, "synthetic", [f"shape{k}" for k in range(num_classes)])
