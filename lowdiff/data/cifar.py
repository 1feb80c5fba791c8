"""CIFAR-10 from the official python archive, read without unpickling: the batch files
are walked opcode by opcode with `pickletools.genops` and only plain data (dicts, lists,
strings, bytes, numbers) is rebuilt; any class or function reference stays an inert
placeholder."""
from __future__ import annotations

import io
import pickletools
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError, ImageDataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_IMAGE_BYTES = 3 * 32 * 32


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


def is_cifar(path: Path) -> bool:
    """Whether `path` looks like the CIFAR-10 python archive or its batch directory."""
    name = path.name.lower()
    if path.is_dir():
        return name == "cifar-10-batches-py" or (path / "cifar-10-batches-py").is_dir() or \
            (path / "data_batch_1").is_file()
    return name.endswith((".tar.gz", ".tgz", ".tar"))
