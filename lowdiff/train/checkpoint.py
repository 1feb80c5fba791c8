"""Checkpoints: safetensors + JSON, written atomically, never pickled.

A model directory (what `lowdiff sample --checkpoint DIR` and `lowdiff.load(DIR)` read):
  config.json          the resolved preset (architecture, precond, stage plan)
  model.safetensors    the EMA weights of the denoiser
A training run adds `checkpoints/state-{step:09d}.{safetensors,json}`: model, EMA,
optimizer, RNG states and data position, with the tensor file's SHA-256 in the JSON so
that a truncated or corrupt file is detected and the previous state is used instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import Preset

MODEL_FILE, CONFIG_FILE, STATE_DIR = "model.safetensors", "config.json", "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or corrupt."""


def atomic_write(path: Path, write) -> None:
    """Write via `write(tmp)`, fsync, then rename over `path`: readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


# --- model directories ------------------------------------------------------------------

def save_model(directory: str | Path, preset: Preset, state_dict: dict[str, torch.Tensor]) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / MODEL_FILE, lambda p: save_file(_contiguous(state_dict), str(p), metadata={"format": "pt"}))
    _write_json(d / CONFIG_FILE, preset.to_dict())


def load_config(directory: str | Path) -> Preset:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a lowdiff model directory: {CONFIG_FILE} is missing")
    try:
        return Preset.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path} is corrupt or from an incompatible version: {e}") from e


def load_model_state(directory: str | Path) -> dict[str, torch.Tensor]:
    return _load_tensors(Path(directory) / MODEL_FILE)


# --- training states --------------------------------------------------------------------

def save_state(run_dir: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
               keep: int = 2) -> Path:
    d = Path(run_dir) / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensor_path = d / f"state-{step:09d}.safetensors"
    atomic_write(tensor_path, lambda p: save_file(_contiguous(tensors), str(p)))
    _write_json(d / f"state-{step:09d}.json", {**meta, "step": step, "sha256": sha256(tensor_path)})
    for old in sorted(d.glob("state-*.json"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return tensor_path


def load_latest_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest training state that passes its checksum; older ones are tried with a
    warning when the newest is corrupt. None when the run has no state yet."""
    d = Path(run_dir) / STATE_DIR
    candidates = sorted(d.glob("state-*.json"), reverse=True) if d.is_dir() else []
    for meta_path in candidates:
        tensor_path = meta_path.with_suffix(".safetensors")
        try:
            meta = json.loads(meta_path.read_text())
            if not tensor_path.is_file() or sha256(tensor_path) != meta["sha256"]:
                raise CheckpointError(f"{tensor_path} is missing or fails its checksum")
            return _load_tensors(tensor_path), meta
        except (CheckpointError, json.JSONDecodeError, KeyError) as e:
            warnings.warn(f"skipping corrupt training state {meta_path.name}: {e}; trying an older one")
    return None
