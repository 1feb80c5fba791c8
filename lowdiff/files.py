"""Reading and writing files safely. Every file lowdiff writes goes through `atomic_write`:
written under a temporary name beside it, then renamed, so a kill or a full disk never leaves
a torn file, and a failed write is one line naming the file (`WriteError`). Every JSON file
lowdiff reads goes through `read_json`: invalid, undecodable or absurdly nested JSON is one
line naming the file."""
from __future__ import annotations

import errno
import json
import itertools
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, WriteError

FILE_MODE = 0o644                  # files are readable by everyone, like any installed data
_WRITES = itertools.count()        # this process's writes, for temporary names of their own
MAX_JSON_DEPTH = 100               # configs and plan files nest a few levels; far deeper is not ours


def atomic_write(path: str | Path, write, sync: bool = True) -> None:
    """Write via `write(tmp)`, then rename over `path` (after an fsync with `sync`): readers
    never see a partial file, and a failed write leaves no temporary file behind. `sync=False`
    (one image of many) still survives a kill, not a power cut."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_WRITES)}.tmp")     # one per writer: no two share it
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if (isinstance(e, OSError) and not isinstance(e, WriteError)) or out_of_space(e):
            raise WriteError(_write_failure(path, e)) from None
        raise


def out_of_space(e: BaseException) -> bool:
    """An error (OSError, or a library's own error wrapping one, as safetensors' does) that says the disk is full."""
    return getattr(e, "errno", None) == errno.ENOSPC or "os error 28" in str(e) or "No space left" in str(e)


def _write_failure(path: Path, e: BaseException) -> str:
    if out_of_space(e):
        return f"{path}: no space left on the device; free some space (this file was not written)"
    reason = getattr(e, "strerror", None) or str(e)
    return f"{path}: could not be written ({reason}); check the folder and its permissions"


def write_text(path: str | Path, text: str, sync: bool = True) -> None:
    atomic_write(path, lambda p: p.write_text(text), sync)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`; a ConfigError naming the file when it is not UTF-8 JSON or nests
    deeper than MAX_JSON_DEPTH."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected JSON)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels; not a lowdiff file") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ConfigError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels; not a lowdiff file")
    return data


def _depth(value: Any) -> int:
    """Nesting depth of lists and objects, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest
