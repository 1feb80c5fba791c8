"""Image conversion and grids."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import ConfigError


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8, EDM's rounding (x * 127.5 + 128, clipped, truncated)."""
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8)


def _pil(img: np.ndarray) -> Image.Image:
    """(C, H, W) uint8 -> PIL image (mode L for one channel)."""
    return Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))


def make_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2,
              row_labels: list[str] | None = None, scale: int = 1) -> Image.Image:
    """Tile (N, C, H, W) uint8 images; optional text labels left of each row."""
    images = images.cpu().numpy()
    n, c, h, w = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    label_w = 0
    font = ImageFont.load_default()
    if row_labels:
        label_w = max(int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(t, font=font)) for t in row_labels) + 8
    mode = "L" if c == 1 else "RGB"
    cell_h, cell_w = h * scale + pad, w * scale + pad
    background = (255 if row_labels else 0) if mode == "L" else ((255,) * 3 if row_labels else (0,) * 3)
    grid = Image.new(mode, (label_w + ncol * cell_w + pad, nrow * cell_h + pad), color=background)
    for i in range(n):
        tile = _pil(images[i]).resize((w * scale, h * scale), Image.NEAREST)
        grid.paste(tile, (label_w + pad + (i % ncol) * cell_w, pad + (i // ncol) * cell_h))
    if row_labels:
        draw = ImageDraw.Draw(grid)
        for r, text in enumerate(row_labels[:nrow]):
            draw.text((4, pad + r * cell_h + cell_h // 2 - 6), text, fill=0, font=font)
    return grid


GRID_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_grid_path(out: str | Path) -> bool:
    """A .png/.jpg path gets a grid; any other path is a folder of one PNG per seed."""
    return Path(out).suffix.lower() in GRID_SUFFIXES


def save_grid(images: torch.Tensor, out: str | Path, **grid_kwargs) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, **grid_kwargs).save(out)


SAMPLE_NAME = re.compile(r"^\d{6,}\.png$")          # what FolderWriter writes: {seed:06d}.png
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_sample_folder(out: str | Path, overwrite: bool = False) -> list[Path]:
    """The files of an earlier sampling run in `out` (its PNGs and labels.csv), which `overwrite`
    allows to replace; a ConfigError when the folder holds them without `overwrite`, or holds other
    images (`eval fid --images` would measure a mixture)."""
    out = Path(out)
    if not out.is_dir():
        return []
    files = [p for p in out.iterdir() if p.is_file()]
    ours = [p for p in files if SAMPLE_NAME.match(p.name) or p.name == FolderWriter.LABELS]
    others = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not SAMPLE_NAME.match(p.name)]
    if others:
        raise ConfigError(f"--out {out}: holds other images ({others[0].name}, {len(others)} in all); sample into "
                          "an empty folder")
    if ours and not overwrite:
        raise ConfigError(f"--out {out}: holds {len(ours)} files of an earlier run; pass --overwrite to replace "
                          "them, or choose an empty folder")
    return ours


class FolderWriter:
    """Writes images as {seed:06d}.png into a folder as each batch arrives (an interrupted run
    keeps what it finished), and, for class-conditional samples, one `labels.csv` row per image
    (file, seed, class, class name). The folder holds no earlier images (`check_sample_folder`;
    with `overwrite` those of an earlier run are removed first), so labels.csv always lists
    exactly the images in it."""

    LABELS = "labels.csv"

    def __init__(self, out: str | Path, class_names: list[str] | None = None, overwrite: bool = False):
        self.out, self.class_names, self.count = Path(out), class_names or [], 0
        for old in check_sample_folder(self.out, overwrite):
            old.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        self._labels = None

    def __call__(self, images: torch.Tensor, seeds: list[int], labels: list[int] | None = None) -> None:
        for img, seed in zip(images.cpu().numpy(), seeds):
            _pil(img).save(self.out / f"{seed:06d}.png")
        if labels is not None:
            if self._labels is None:
                self._labels = open(self.out / self.LABELS, "w")
                self._labels.write("file,seed,class,class_name\n")
            for seed, c in zip(seeds, labels):
                name = self.class_names[c] if c < len(self.class_names) else ""
                self._labels.write(f"{seed:06d}.png,{seed},{c},\"{name}\"\n")
            self._labels.flush()
        self.count += len(seeds)

    def close(self) -> None:
        if self._labels is not None:
            self._labels.close()
