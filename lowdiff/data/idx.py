"""IDX files (the MNIST / Fashion-MNIST format) and Fashion-MNIST from its four official
.gz files (Debian package `dataset-fashion-mnist`)."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, ImageDataset, pad_images

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str | Path) -> np.ndarray:
    """Read a raw or gzipped IDX file of unsigned bytes; return an array with the file's dimensions."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"IDX file {path} is a corrupt gzip file ({e}); download it again") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DatasetError(f"{path} is not an IDX file (bad magic number); expected e.g. train-images-idx3-ubyte.gz")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DatasetError(f"IDX file {path} has data type code 0x{dtype_code:02x}; only 0x08 (unsigned byte) "
                           f"is supported")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"IDX file {path} has a truncated or invalid header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = int(np.prod(dims, dtype=np.int64))
    offset = 4 + 4 * ndim
    if len(raw) - offset != count:
        raise DatasetError(f"IDX file {path}: header says {'x'.join(map(str, dims))} = {count} bytes of data but the "
                           f"file has {len(raw) - offset}; the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, np.uint8, count, offset).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped if the path ends with .gz."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DatasetError(f"write_idx supports only uint8 arrays, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise DatasetError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _idx_images(array: np.ndarray, path: Path) -> np.ndarray:
    """Turn an IDX image array (N, H, W), (N, C, H, W) or (N, H, W, C) into (N, C, H, W)."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    if array.ndim == 4 and array.shape[3] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    raise DatasetError(f"IDX file {path} has shape {array.shape}; expected images (N, H, W) or (N, C, H, W)")


def _idx_labels(labels: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Check an IDX label array against the number of images."""
    if labels.shape != (n,):
        raise DatasetError(f"label file {path} has shape {labels.shape} but there are {n} images; "
                           f"use the label file that belongs to the image file")
    return labels.astype(np.int64)


def load_fashion_mnist(root: str | Path = FASHION_DIR, split: str = "train", pad_to: int | None = 32) -> ImageDataset:
    """Fashion-MNIST from the four official .gz files, zero-padded from 28x28 to `pad_to` (None: no padding)."""
    root = Path(root)
    if split not in ("train", "test"):
        raise DatasetError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    image_file, label_file = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    missing = [p.name for p in (image_file, label_file) if not p.is_file()]
    if not root.is_dir() or missing:
        what = "directory not found" if not root.is_dir() else f"missing {', '.join(missing)}"
        raise DatasetError(f"Fashion-MNIST not found at {root} ({what}): install it with "
                           f"`apt-get install dataset-fashion-mnist` (Debian package) or pass the directory containing "
                           f"the four .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                           f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")
    images = _idx_images(read_idx(image_file), image_file)
    labels = _idx_labels(read_idx(label_file), len(images), label_file)
    if pad_to is not None:
        images = pad_images(images, pad_to, "Fashion-MNIST")
    return ImageDataset(images, labels, f"fashion-mnist:{split}", FASHION_CLASSES)


def _idx_label_file(image_file: Path) -> Path | None:
    """The sibling label file of an IDX image file ('images' -> 'labels', 'idx3' -> 'idx1'), if it exists."""
    name = image_file.name.replace("images", "labels")
    for candidate in (name.replace("idx3", "idx1"), name):
        if candidate != image_file.name and (image_file.parent / candidate).is_file():
            return image_file.parent / candidate
    return None


def load_idx_dataset(path: Path) -> ImageDataset:
    """An IDX image file, with labels from its sibling label file when there is one."""
    images = _idx_images(read_idx(path), path)
    label_file = _idx_label_file(path)
    labels = _idx_labels(read_idx(label_file), len(images), label_file) if label_file else None
    return ImageDataset(images, labels, path.name.split(".")[0])
