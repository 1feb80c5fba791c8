"""Checks made before any work starts: numeric option values, seed lists, devices and output
paths. Each failure is one line naming what to change (a ConfigError, or an argparse error
for option values), never a traceback after minutes of sampling."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import torch

from .errors import ConfigError
from .seeds import MAX_SEED, Seeds


def _number(kind, low: float, strict: bool, high: float = math.inf):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
        return value
    parse.__name__ = kind.__name__          # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, strict=False)
at_least_2 = _number(int, 2, strict=False)          # sample counts of an FID (a covariance needs two)
nonnegative_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
MAX_BATCH = 65_536
# The network precisions of training (`TrainConfig.precision`) and inference (`--precision`): autocast dtypes.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
batch_size = _number(int, 1, strict=False, high=MAX_BATCH)     # images per batch: a bound before any allocation
seed_value = _number(int, 0, strict=False, high=MAX_SEED)      # --seed: what a torch.Generator takes without wrapping


def positive_int_list(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64) (argparse type)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, like 16,32,64, got {text!r}")
    return values


def in_range(where: str, value, low: float, high: float, integer: bool = False) -> None:
    """A ConfigError unless `value` is a finite number (an integer with `integer`) in [low, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or not low <= value <= high:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{where} must be {kind} in [{low:g}, {high:g}], got {value!r}")


def seed_list(text: str) -> Seeds:
    """'0-63,100' -> Seeds (ranges, never materialised; argparse type)."""
    try:
        return Seeds.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


AUTO_DEVICE = "auto"       # every command's --device default, and lowdiff.load's


def default_device() -> str:
    """cuda when a GPU is visible, else cpu. Under torchrun each process takes its LOCAL_RANK's
    GPU, and every process the CPU when this node has fewer GPUs than processes (the same
    choice on each, so the launch never mixes NCCL and gloo)."""
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return "cuda"
    if torch.cuda.device_count() < int(os.environ.get("LOCAL_WORLD_SIZE", "1")):
        return "cpu"
    return f"cuda:{int(local_rank)}"


def resolve_device(name: str | None) -> str:
    """The device `name` stands for: `auto` (or None) is `default_device()`, any other name itself."""
    return default_device() if name in (None, AUTO_DEVICE) else name


def check_device(name: str) -> torch.device:
    """The torch device `name` (`auto`: `default_device()`), which must exist here."""
    name = resolve_device(name)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"--device {name}: CUDA is not available ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name}: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def check_output(path: str | Path, option: str = "--out", directory: bool = False) -> Path:
    """An output file (or, `directory`, a folder) that can be written: no file where a folder
    must be, no folder where the file must be, and the nearest existing folder writable."""
    path = Path(path)
    if directory and path.is_file():
        raise ConfigError(f"{option} {path}: is a file, not a folder")
    if not directory and path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    parent = path if directory else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, so nothing can be written below it")
    if any(len(part.encode()) > 255 for part in path.parts):
        raise ConfigError(f"{option} {path}: a name in it is longer than 255 bytes")
    _probe_write(parent, option, path)
    if path.is_file():
        try:
            open(path, "ab").close()                      # opened for appending: nothing changes
        except OSError as e:
            raise ConfigError(f"{option} {path}: not writable ({e.strerror})") from None
    return path


def _probe_write(folder: Path, option: str, path: Path) -> None:
    """Create and remove a file in `folder`: permissions, read-only file systems and full disks
    show here, before any work, rather than at the first write."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lowdiff-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot write in {folder} ({e.strerror})") from None
