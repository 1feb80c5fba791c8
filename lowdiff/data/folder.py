"""EDM-style image datasets: a directory or .zip of PNG / JPG files with an optional
dataset.json holding labels (and class names); reading and writing."""
from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..files import atomic_write, write_text
from ..images import is_image_name
from .base import DatasetError, ImageDataset

@contextlib.contextmanager
def _open_folder(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes | None]]]:
    """Yield (sorted relative image paths, read(relpath) -> bytes or None) for a directory or zip."""
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())

        def read_dir(rel: str) -> bytes | None:
            return (path / rel).read_bytes() if (path / rel).is_file() else None
        yield [n for n in names if is_image_name(n)], read_dir
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"cannot open {path} as a zip file ({e}); pass a directory or a valid .zip") from e
    with zf:
        members = set(zf.namelist())

        def read_zip(rel: str) -> bytes | None:
            try:
                return zf.read(rel) if rel in members else None
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise DatasetError(f"{rel} in {path} is corrupt ({e}); rebuild the zip") from e
        yield sorted(n for n in members if not n.endswith("/") and is_image_name(n)), read_zip


def _decode_image(data: bytes, rel: str, where: Path) -> tuple[np.ndarray, bool]:
    """Decode PNG/JPG bytes to (C, H, W) uint8 (grayscale -> 1 channel, everything else -> RGB on
    white) and whether the image had transparency, which that drops."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_array(img), _has_alpha(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {rel} in {where} ({e}); remove or replace the file") from e


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite uint8 (H, W, C) colour with (H, W) alpha onto a white background."""
    a = alpha.astype(np.float32)[..., None] / 255
    return np.round(color * a + 255 * (1 - a)).astype(np.uint8)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info)


def _to_array(img: Image.Image) -> np.ndarray:
    """A loaded PIL image as (C, H, W) uint8."""
    if img.mode.startswith("I;16"):
        arr = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)[..., None]
    elif img.mode in ("1", "L", "I", "F"):
        arr = np.asarray(img.convert("L"))[..., None]
    elif img.mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        arr = _on_white(la[..., :1], la[..., 1])
    elif img.mode in ("RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        arr = _on_white(rgba[..., :3], rgba[..., 3])
    else:
        arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _check_image(img: np.ndarray, rel: str, first: tuple[str, np.ndarray], where: Path) -> None:
    """Raise if `img` is non-square or differs in size/channels from the first image."""
    c, h, w = img.shape
    first_rel, (c0, h0, w0) = first[0], first[1].shape
    if h != w:
        raise DatasetError(f"image {rel} in {where} is {w}x{h}; images must be square (crop or resize them)")
    if (h, w) != (h0, w0):
        raise DatasetError(f"image {rel} in {where} is {w}x{h} but the first image {first_rel} is {w0}x{h0}; "
                           f"all images must have the same size (resize them)")
    if c != c0:
        kinds = {1: "grayscale", 3: "RGB"}
        raise DatasetError(f"image {rel} in {where} has {c} channel(s) ({kinds[c]}) but the first image {first_rel} "
                           f"has {c0} ({kinds[c0]}); convert all images to the same mode")


def _parse_labels(raw: bytes, names: list[str], where: Path) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels (aligned with `names`) and optional class names from dataset.json's content."""
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DatasetError(f"dataset.json in {where} is not valid JSON ({type(e).__name__})") from None
    entries = meta.get("labels") if isinstance(meta, dict) else None
    class_names = meta.get("class_names") if isinstance(meta, dict) else None
    if class_names is not None and not (isinstance(class_names, list) and all(isinstance(n, str) for n in class_names)):
        raise DatasetError(f"dataset.json in {where}: 'class_names' must be a list of strings")
    if entries is None:
        return None, class_names
    if not isinstance(entries, list):
        raise DatasetError(f"dataset.json in {where}: 'labels' must be a list of [path, label] pairs or null")
    table: dict[str, int] = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(f"dataset.json in {where}: bad entry {entry!r}; expected [relative/path.png, label]")
        rel, label = entry[0].replace("\\", "/"), entry[1]
        if type(label) is not int or label < 0:
            raise DatasetError(f"dataset.json in {where}: label {label!r} of {rel} is not a non-negative integer")
        table[rel] = label
    _check_label_match(table, names, where)
    return np.array([table[n] for n in names], dtype=np.int64), class_names


def _check_label_match(table: dict[str, int], names: list[str], where: Path) -> None:
    """Raise if dataset.json labels and the image files do not correspond one to one."""
    missing = sorted(set(table) - set(names))
    unlabelled = [n for n in names if n not in table]
    if missing:
        raise DatasetError(f"label mismatch in {where}: dataset.json labels {len(missing)} file(s) that are not "
                           f"images in the dataset, e.g. {', '.join(missing[:3])}; fix dataset.json")
    if unlabelled:
        raise DatasetError(f"label mismatch in {where}: {len(unlabelled)} image(s) have no label in dataset.json, "
                           f"e.g. {', '.join(unlabelled[:3])}; add them or pass use_labels=False")


def load_image_folder(path: str | Path, use_labels: bool = True) -> ImageDataset:
    """EDM-style dataset: a directory or .zip of PNG/JPG images with an optional dataset.json of labels."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"image folder {path} does not exist; pass a directory or .zip of PNG/JPG images")
    with _open_folder(path) as (names, read):
        if not names:
            raise DatasetError(f"no images (.png, .jpg, .jpeg) found in {path}")
        images: list[np.ndarray] = []
        transparent = []
        for rel in names:
            img, alpha = _decode_image(read(rel), rel, path)
            _check_image(img, rel, (names[0], images[0] if images else img), path)
            images.append(img)
            transparent += [rel] if alpha else []
        meta = read("dataset.json") if use_labels else None
    if transparent:
        warnings.warn(f"{path}: {len(transparent)} image(s) with transparency (e.g. {transparent[0]}) are read "
                      "composited onto white; remove the alpha channel to silence this")
    labels, class_names = _parse_labels(meta, names, path) if meta is not None else (None, None)
    name = path.name[:-4] if path.suffix.lower() == ".zip" else path.name
    return ImageDataset(np.stack(images), labels, name, class_names)


def save_image_folder(ds: ImageDataset, path: str | Path) -> None:
    """Write `ds` in EDM layout ({idx//1000:05d}/img{idx:08d}.png + dataset.json) to a directory or .zip."""
    path = Path(path)
    rels = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(ds))]
    meta: dict[str, Any] = {"labels": None if ds.labels is None else
                            [[rel, int(label)] for rel, label in zip(rels, ds.labels)]}
    if ds.class_names is not None:
        meta["class_names"] = ds.class_names
    files = ((rel, _png_bytes(img)) for rel, img in zip(rels, ds.images))
    if path.suffix.lower() == ".zip":
        path.parent.mkdir(parents=True, exist_ok=True)

        def write_zip(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                for rel, data in files:
                    zf.writestr(rel, data)
                zf.writestr("dataset.json", json.dumps(meta))
        atomic_write(path, write_zip)
        return
    for rel, data in files:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path / rel, lambda p, data=data: p.write_bytes(data), sync=False)
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / "dataset.json", json.dumps(meta))


def _png_bytes(img: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes (mode L or RGB)."""
    buf = io.BytesIO()
    Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()
