"""Datasets: Fashion-MNIST (IDX), CIFAR-10 (python archive), EDM-style image folders/zips, synthetic shapes.

Every dataset is held in memory as one uint8 (N, C, H, W) array. Nothing here unpickles: CIFAR-10 batch
files are read by walking their pickle opcodes with `pickletools.genops` and rebuilding only plain data
(dicts, lists, strings, bytes, numbers); any class or function reference stays an inert placeholder.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import pickletools
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CIFAR_IMAGE_BYTES = 3 * 32 * 32
_SPEC_FORMS = ("'fashion-mnist' or 'fashion-mnist:test'",
               "a cifar-10-python.tar.gz file or cifar-10-batches-py directory",
               "an IDX image file (*.idx, *-idx3-ubyte.gz)", "'synthetic', 'synthetic:N' or 'synthetic:N:RES'",
               "a directory or .zip of PNG/JPG images (optional dataset.json with labels)",
               "a latent directory written by `lowdiff dataset encode` (latents.json)",
               "'emoji' or 'emoji:RES' (Noto Color Emoji rendered at RES, default 64)")


class DatasetError(ValueError):
    """A problem with dataset files or arguments that the user can fix."""


class ImageDataset(torch.utils.data.Dataset):
    """In-memory uint8 images (N, C, H, W) with optional int64 labels (N,)."""

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


def _pad_images(images: np.ndarray, size: int, name: str) -> np.ndarray:
    """Zero-pad (N, C, H, H) images to (N, C, size, size), centred (extra pixel at the bottom/right)."""
    res = images.shape[-1]
    if size < res:
        raise DatasetError(f"cannot pad {name} from {res}x{res} to {size}x{size}: pad_to must be >= {res}")
    before = (size - res) // 2
    after = size - res - before
    return np.pad(images, ((0, 0), (0, 0), (before, after), (before, after)))


# ---------------------------------------------------------------------------------------------------- IDX

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
        images = _pad_images(images, pad_to, "Fashion-MNIST")
    return ImageDataset(images, labels, f"fashion-mnist:{split}", FASHION_CLASSES)


def _idx_label_file(image_file: Path) -> Path | None:
    """The sibling label file of an IDX image file ('images' -> 'labels', 'idx3' -> 'idx1'), if it exists."""
    name = image_file.name.replace("images", "labels")
    for candidate in (name.replace("idx3", "idx1"), name):
        if candidate != image_file.name and (image_file.parent / candidate).is_file():
            return image_file.parent / candidate
    return None


def _load_idx_dataset(path: Path) -> ImageDataset:
    """An IDX image file, with labels from its sibling label file when there is one."""
    images = _idx_images(read_idx(path), path)
    label_file = _idx_label_file(path)
    labels = _idx_labels(read_idx(label_file), len(images), label_file) if label_file else None
    return ImageDataset(images, labels, path.name.split(".")[0])


# ---------------------------------------------------------------------------------------------------- CIFAR-10

@dataclass(frozen=True)
class _Global:
    """An inert reference to `module.name` found in a pickle; never imported."""
    module: str
    name: str


@dataclass(eq=False)
class _Call:
    """An inert record of a pickled call `func(*args)` plus its BUILD state; never executed."""
    func: Any
    args: Any
    state: Any = field(default=None)


_MARK = object()
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "INT", "BININT", "BININT1", "BININT2",
               "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"}
_CONSTANTS = {"NONE": lambda: None, "NEWTRUE": lambda: True, "NEWFALSE": lambda: False,
              "EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_TUPLE": tuple}
_LATIN1 = ("latin1", "latin-1")


def _pop_mark(stack: list) -> list:
    """Pop everything above the topmost MARK (and the mark itself)."""
    i = len(stack) - 1 - stack[::-1].index(_MARK)
    items = stack[i + 1:]
    del stack[i:]
    return items


def _reduce(func: Any, args: Any) -> Any:
    """Evaluate the two harmless calls pickle uses for bytes (`_codecs.encode(s, 'latin1')`, `bytes()`)."""
    if func == _Global("_codecs", "encode") and len(args) == 2 and isinstance(args[0], str) and args[1] in _LATIN1:
        return args[0].encode("latin-1")
    if func in (_Global("__builtin__", "bytes"), _Global("builtins", "bytes")) and args == ():
        return b""
    return _Call(func, args)


def _apply(op: str, arg: Any, stack: list, memo: dict) -> None:
    """Apply one pickle opcode to the data-only stack machine."""
    if op in _STRING_OPS:
        stack.append(arg)
    elif op in _CONSTANTS:
        stack.append(_CONSTANTS[op]())
    elif op == "BYTEARRAY8":
        stack.append(bytes(arg))
    elif op == "MARK":
        stack.append(_MARK)
    elif op in ("LIST", "TUPLE"):
        items = _pop_mark(stack)
        stack.append(items if op == "LIST" else tuple(items))
    elif op in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(op[-1])
        items = tuple(stack[-n:])
        del stack[-n:]
        stack.append(items)
    elif op == "DICT":
        items = _pop_mark(stack)
        stack.append(dict(zip(items[::2], items[1::2])))
    elif op == "APPEND":
        value = stack.pop()
        stack[-1].append(value)
    elif op == "APPENDS":
        items = _pop_mark(stack)
        stack[-1].extend(items)
    elif op == "SETITEM":
        value, key = stack.pop(), stack.pop()
        stack[-1][key] = value
    elif op == "SETITEMS":
        items = _pop_mark(stack)
        stack[-1].update(zip(items[::2], items[1::2]))
    elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
    elif op == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif op in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
    elif op == "GLOBAL":
        stack.append(_Global(*arg.split(" ", 1)))
    elif op == "STACK_GLOBAL":
        name, module = stack.pop(), stack.pop()
        stack.append(_Global(module, name))
    elif op == "REDUCE":
        args = stack.pop()
        stack.append(_reduce(stack.pop(), args))
    elif op in ("NEWOBJ", "NEWOBJ_EX"):
        args = stack.pop() if op == "NEWOBJ" else (stack.pop(), stack.pop())
        stack.append(_Call(stack.pop(), args))
    elif op == "BUILD":
        state = stack.pop()
        if not isinstance(stack[-1], _Call):
            raise ValueError("BUILD on a plain value")
        stack[-1].state = state
    elif op == "POP":
        stack.pop()
    elif op == "POP_MARK":
        _pop_mark(stack)
    elif op == "DUP":
        stack.append(stack[-1])
    elif op not in ("PROTO", "FRAME"):
        raise ValueError(f"unsupported pickle opcode {op}")


def _parse_pickle(data: bytes, source: str) -> Any:
    """Rebuild the plain-data content of a pickle by walking its opcodes; nothing is imported or called."""
    stack: list = []
    memo: dict = {}
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "STOP":
                return stack.pop()
            _apply(opcode.name, arg, stack, memo)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, UnicodeError) as e:
        raise DatasetError(f"{source} is not a valid CIFAR-10 pickle file ({e}); download {CIFAR_URL} again") from e
    raise DatasetError(f"{source} is truncated (no STOP opcode); download {CIFAR_URL} again")


def _lookup(record: Any, key: str, source: str) -> Any:
    """record[key] where the key may be stored as str (Python 2 pickles) or bytes (Python 3)."""
    if not isinstance(record, dict):
        raise DatasetError(f"{source} does not contain a dict; it is not a CIFAR-10 batch file")
    for k in (key, key.encode()):
        if k in record:
            return record[k]
    raise DatasetError(f"{source} has no '{key}' entry; it is not a CIFAR-10 batch file")


def _image_payload(value: Any, depth: int = 0) -> bytes | None:
    """The first bytes/latin-1 string inside `value` whose length is a positive multiple of 3072."""
    if depth > 8:
        return None
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            return None
    if isinstance(value, bytes):
        return value if value and len(value) % _CIFAR_IMAGE_BYTES == 0 else None
    children = (value.args, value.state) if isinstance(value, _Call) else value
    if isinstance(children, (tuple, list)):
        for child in children:
            found = _image_payload(child, depth + 1)
            if found is not None:
                return found
    return None


def _parse_cifar_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) from one CIFAR-10 batch file."""
    record = _parse_pickle(data, source)
    payload = _image_payload(_lookup(record, "data", source))
    labels = _lookup(record, "labels", source)
    if payload is None:
        raise DatasetError(f"{source}: 'data' holds no image bytes (a multiple of 3072); download {CIFAR_URL} again")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise DatasetError(f"{source}: 'labels' is not a list of integers; download {CIFAR_URL} again")
    if len(payload) != _CIFAR_IMAGE_BYTES * len(labels):
        raise DatasetError(f"{source}: {len(payload)} bytes of image data = {len(payload) // _CIFAR_IMAGE_BYTES} "
                           f"images but {len(labels)} labels; the file is corrupt, download {CIFAR_URL} again")
    images = np.frombuffer(payload, np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)


def _parse_cifar_meta(data: bytes, source: str) -> list[str]:
    """Class names from batches.meta ('label_names'), or the standard names if absent."""
    record = _parse_pickle(data, source)
    names = record.get("label_names", record.get(b"label_names")) if isinstance(record, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        return list(CIFAR10_CLASSES)
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _read_cifar_files(path: Path, names: list[str]) -> dict[str, bytes]:
    """Read the named batch files (those present) from an archive or a cifar-10-batches-py directory."""
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in found:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read CIFAR-10 archive {path} ({e}); download {CIFAR_URL} again") from e
    return found


def load_cifar10(path: str | Path, split: str = "train") -> ImageDataset:
    """CIFAR-10 from the official cifar-10-python.tar.gz (or its extracted cifar-10-batches-py directory)."""
    path = Path(path)
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if not path.exists():
        raise DatasetError(f"CIFAR-10 not found at {path}: download {CIFAR_URL} and pass the .tar.gz "
                           f"(or the extracted cifar-10-batches-py directory)")
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = _read_cifar_files(path, batches + ["batches.meta"])
    missing = [b for b in batches if b not in files]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}; expected the official CIFAR-10 python version "
                           f"({CIFAR_URL})")
    parts = [_parse_cifar_batch(files[b], f"{path}:{b}") for b in batches]
    names = _parse_cifar_meta(files["batches.meta"], f"{path}:batches.meta") if "batches.meta" in files \
        else list(CIFAR10_CLASSES)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset(images, labels, f"cifar10:{split}", names)


# ---------------------------------------------------------------------------------------------------- image folders

def _is_image_name(rel: str) -> bool:
    """An image file name that is not hidden and not macOS zip metadata."""
    parts = rel.split("/")
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and rel.lower().endswith(IMAGE_EXTENSIONS)


@contextlib.contextmanager
def _open_folder(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes | None]]]:
    """Yield (sorted relative image paths, read(relpath) -> bytes or None) for a directory or zip."""
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())

        def read_dir(rel: str) -> bytes | None:
            return (path / rel).read_bytes() if (path / rel).is_file() else None
        yield [n for n in names if _is_image_name(n)], read_dir
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
        yield sorted(n for n in members if not n.endswith("/") and _is_image_name(n)), read_zip


def _decode_image(data: bytes, rel: str, where: Path) -> np.ndarray:
    """Decode PNG/JPG bytes to (C, H, W) uint8: grayscale -> 1 channel, everything else -> RGB on white."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_array(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {rel} in {where} ({e}); remove or replace the file") from e


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite uint8 (H, W, C) colour with (H, W) alpha onto a white background."""
    a = alpha.astype(np.float32)[..., None] / 255
    return np.round(color * a + 255 * (1 - a)).astype(np.uint8)


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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"dataset.json in {where} is not valid JSON ({e})") from e
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
        for rel in names:
            img = _decode_image(read(rel), rel, path)
            _check_image(img, rel, (names[0], images[0] if images else img), path)
            images.append(img)
        meta = read("dataset.json") if use_labels else None
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
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for rel, data in files:
                zf.writestr(rel, data)
            zf.writestr("dataset.json", json.dumps(meta))
        return
    for rel, data in files:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset.json").write_text(json.dumps(meta))


def _png_bytes(img: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes (mode L or RGB)."""
    buf = io.BytesIO()
    Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- synthetic

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


# ---------------------------------------------------------------------------------------------------- dispatch

def _spec_error(spec: str, reason: str) -> DatasetError:
    """A DatasetError for a bad spec, listing the accepted forms."""
    forms = "\n  ".join(_SPEC_FORMS)
    return DatasetError(f"{reason}: {spec!r}; accepted dataset specs:\n  {forms}")


def _parse_synthetic(spec: str) -> ImageDataset:
    """'synthetic', 'synthetic:N' or 'synthetic:N:RES'."""
    parts = spec.split(":")[1:]
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise _spec_error(spec, "bad synthetic dataset spec")
    num, res = (int(p) for p in parts + ["256", "32"][len(parts):])
    return make_synthetic(num=num, resolution=res)


def _is_cifar(path: Path) -> bool:
    """Whether `path` looks like the CIFAR-10 python archive or its batch directory."""
    name = path.name.lower()
    if path.is_dir():
        return name == "cifar-10-batches-py" or (path / "cifar-10-batches-py").is_dir() or \
            (path / "data_batch_1").is_file()
    return name.endswith((".tar.gz", ".tgz", ".tar"))


def _open_path(path: Path, split: str, use_labels: bool) -> ImageDataset:
    """Dispatch an existing path on its kind."""
    if _is_cifar(path):
        return load_cifar10(path, split)
    name = path.name.lower()
    if path.is_file() and (name.endswith((".idx", ".gz")) or "idx" in name) and not name.endswith(".zip"):
        return _load_idx_dataset(path)
    if path.is_dir() or name.endswith(".zip"):
        return load_image_folder(path, use_labels)
    raise _spec_error(str(path), "unrecognised dataset file")


def open_dataset(spec: str, *, split: str = "train", pad_to: int | None = None,
                 use_labels: bool = True) -> ImageDataset:
    """Open a dataset by name or path (see _SPEC_FORMS); `pad_to` zero-pads images to that resolution."""
    head, _, tail = spec.partition(":")
    if head == "fashion-mnist":
        if tail not in ("", "train", "test"):
            raise _spec_error(spec, "bad Fashion-MNIST split")
        return load_fashion_mnist(split=tail or split, pad_to=32 if pad_to is None else pad_to)
    if head == "emoji":
        if tail and not tail.isdigit():
            raise _spec_error(spec, "bad emoji resolution")
        from .emoji import load_emoji
        ds = load_emoji(int(tail or 64))
    elif head == "synthetic":
        ds = _parse_synthetic(spec)
    elif (Path(spec) / "latents.json").is_file():
        from .latents import LatentDataset
        return LatentDataset(spec)
    elif Path(spec).exists():
        ds = _open_path(Path(spec), split, use_labels)
    else:
        raise _spec_error(spec, "unknown dataset (not a known name and no such file or directory)")
    if pad_to is not None and pad_to != ds.resolution:
        ds = ImageDataset(_pad_images(ds.images, pad_to, ds.name), ds.labels, ds.name, ds.class_names)
    return ds
