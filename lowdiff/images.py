"""Image conversion, grids and folders of samples (their PNGs and labels.csv)."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import ConfigError, WriteError
from .files import atomic_write


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


def save_image(image: Image.Image, out: str | Path, sync: bool = True) -> None:
    """Write a PIL image atomically, in the format its suffix names (.png, .jpg)."""
    image_format = Image.registered_extensions()[Path(out).suffix.lower()]
    atomic_write(out, lambda p: image.save(p, format=image_format), sync)


def save_grid(images: torch.Tensor, out: str | Path, **grid_kwargs) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images, **grid_kwargs), out)


SAMPLE_NAME = re.compile(r"^\d{6,}\.png$")          # what FolderWriter writes: {seed:06d}.png
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_image_name(rel: str) -> bool:
    """A relative path (in a folder or a zip) of an image a dataset reads: an image suffix, not
    hidden, not macOS zip metadata."""
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))
    return not hidden and rel.lower().endswith(IMAGE_SUFFIXES)


def image_files(folder: Path) -> list[str]:
    """The images below `folder` that a dataset of it reads, as sorted relative paths."""
    rels = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(rel for rel in rels if is_image_name(rel))


def check_sample_folder(out: str | Path, overwrite: bool = False) -> list[Path]:
    """The files of an earlier sampling run in `out` (its PNGs and labels.csv), which `overwrite`
    allows to replace; a ConfigError when the folder holds them without `overwrite`, or holds other
    images (`eval fid --images` would measure a mixture)."""
    out = Path(out)
    if not out.is_dir():
        return []
    files = [p for p in out.iterdir() if p.is_file()]
    ours = [p for p in files if SAMPLE_NAME.match(p.name) or p.name == FolderWriter.LABELS]
    others = [rel for rel in image_files(out) if not SAMPLE_NAME.match(rel)]   # subfolders too: eval reads them
    if others:
        raise ConfigError(f"--out {out}: holds other images ({others[0]}, {len(others)} in all); "
                          "sample into an empty folder")
    if ours and not overwrite:
        raise ConfigError(f"--out {out}: holds {len(ours)} files of an earlier run; pass --overwrite to replace "
                          "them, or choose an empty folder")
    return ours


class FolderWriter:
    """Writes images as {seed:06d}.png into a folder as each batch arrives (an interrupted run
    keeps what it finished), and, for class-conditional samples, one `labels.csv` row per image
    (file, seed, class, class name). The folder holds no earlier images (`check_sample_folder`;
    with `overwrite` those of an earlier run are removed first), so labels.csv always lists
    exactly the images in it. Each PNG is written atomically and each batch's rows in one
    append (a failed one is cut back, and the batch's PNGs removed), so nothing is ever torn."""

    LABELS = "labels.csv"
    HEADER = "file,seed,class,class_name\n"

    def __init__(self, out: str | Path, class_names: list[str] | None = None, overwrite: bool = False):
        self.out, self.class_names, self.count = Path(out), class_names or [], 0
        for old in check_sample_folder(self.out, overwrite):
            old.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        self._rows_written = False

    def __call__(self, images: torch.Tensor, seeds: list[int], labels: list[int] | None = None) -> None:
        """Write one batch whole or not at all: a failure (a full disk, Ctrl-C) removes its PNGs again."""
        written = []
        try:
            for img, seed in zip(images.cpu().numpy(), seeds):
                written.append(self.out / f"{seed:06d}.png")
                save_image(_pil(img), written[-1], sync=False)
            if labels is not None:
                rows = "".join(f"{seed:06d}.png,{seed},{c},\"{self._name(c)}\"\n" for seed, c in zip(seeds, labels))
                self._append(("" if self._rows_written else self.HEADER) + rows)
                self._rows_written = True
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        self.count += len(seeds)

    def _name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else ""

    def _append(self, text: str) -> None:
        """Append to labels.csv in one write; on failure (a full disk) cut the file back to its old length."""
        path = self.out / self.LABELS
        data = text.encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | (0 if self._rows_written else os.O_TRUNC), 0o644)
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "No space left on device")
        except OSError as e:
            os.ftruncate(fd, size)
            raise WriteError(f"{path}: could not be written ({e.strerror}); free some space (its rows end with the "
                             "last whole batch)") from None
        finally:
            os.close(fd)


def check_labels_csv(folder: str | Path) -> None:
    """A folder of samples whose labels.csv lists other files than the images in it and its
    subfolders is refused: it holds a mixture or an unfinished copy."""
    folder = Path(folder)
    path = folder / FolderWriter.LABELS
    if not path.is_file():
        return
    images = image_files(folder)
    try:
        with open(path, newline="") as f:
            listed = [row["file"] for row in csv.DictReader(f)]
    except (KeyError, UnicodeDecodeError, csv.Error):
        raise ConfigError(f"{path}: not a labels.csv of `lowdiff sample` (needs a 'file' column)") from None
    extra, missing = sorted(set(images) - set(listed)), sorted(set(listed) - set(images))
    if extra or missing or len(listed) != len(set(listed)):
        what = (f"{len(extra)} image(s) it does not list (e.g. {extra[0]})" if extra else
                f"{len(missing)} listed file(s) that are missing (e.g. {missing[0]})" if missing else
                "rows listing one file twice")
        raise ConfigError(f"{folder}: labels.csv and the images disagree: {what}; measure a folder written by one "
                          "`lowdiff sample` run")
