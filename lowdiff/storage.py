"""The on-disk format: model directories and training states, safetensors + JSON, written
atomically, never pickled. Sampling reads it without importing any training code.

A model directory (what `lowdiff sample --checkpoint DIR` and `lowdiff.load(DIR)` read):
  config.json          the resolved preset (architecture, precond, stage plan) and `model_sha256`,
                       the SHA-256 of model.safetensors, checked when loading
  model.safetensors    the EMA weights of the denoiser (checked: floating point and finite)
A training run is a model directory in the making: it adds
`checkpoints/state-{step:09d}.{safetensors,json}` (model, EMA, optimizer, RNG states, data
position), with the tensor file's SHA-256 in the JSON so that a truncated or corrupt file is
detected. Until the run writes its model.safetensors, loading the run directory uses the EMA
weights of its newest valid state.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import bundled
from .config import WEIGHTS_SHA256, Preset
from .diffusion.denoiser import Denoiser
from .errors import CheckpointError, ConfigError
from .files import atomic_write, read_json, write_json

MODEL_FILE, CONFIG_FILE, STATE_DIR = "model.safetensors", "config.json", "checkpoints"
DEFAULT_MODEL = "bundled:fashion-lowdiff-cond"   # what `lowdiff sample` uses without --checkpoint


def model_dir(spec: str | Path | None) -> Path:
    """A model directory from `--checkpoint`: None (the default bundled model), `bundled:NAME`
    (lowdiff/assets/NAME), or a path."""
    return bundled.resolve(DEFAULT_MODEL if spec is None else spec)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(state, str(p), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- model directories ------------------------------------------------------------------

def save_pretrained(directory: str | Path, preset: Preset, state_dict: dict[str, torch.Tensor]) -> None:
    """Write model.safetensors, then config.json with the SHA-256 of the weights file in it. An
    older config.json goes first: a kill between the two writes leaves a run that loads from its
    newest training state, never new weights beside an old checksum."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG_FILE).unlink(missing_ok=True)
    save_tensors(d / MODEL_FILE, state_dict, metadata={"format": "pt"})
    write_json(d / CONFIG_FILE, {**preset.to_dict(), WEIGHTS_SHA256: sha256(d / MODEL_FILE)})


RUN_CONFIG_FILE = "training_options.json"   # written when a run starts; config.json when it ends


def config_file(directory: str | Path) -> Path:
    """The file holding a model directory's preset: config.json, or training_options.json of a run still training."""
    directory = Path(directory)
    if directory.is_file():
        raise CheckpointError(f"{directory} is a file; give a model directory (config.json + {MODEL_FILE})")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    path = directory / CONFIG_FILE
    if not path.is_file() and (directory / RUN_CONFIG_FILE).is_file() and state_files(directory):
        path = directory / RUN_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a lowdiff model directory: {CONFIG_FILE} is missing")
    return path


def read_config(directory: str | Path) -> tuple[Preset, str | None]:
    """(the preset of a model directory, the SHA-256 its config.json records of the weights or None)."""
    path = config_file(directory)
    try:
        data = read_json(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if isinstance(data, dict) and "_class_name" in data:
        raise CheckpointError(f"{Path(directory)} is a diffusers model (a VAE?), not a lowdiff model directory")
    recorded = data.pop(WEIGHTS_SHA256, None) if isinstance(data, dict) else None
    try:
        return Preset.from_dict(data, str(path)), recorded
    except ConfigError as e:
        raise CheckpointError(f"{path} is corrupt or from an incompatible version: {e}") from e


def load_config(directory: str | Path) -> Preset:
    """The preset of a model directory, or of a run still training (its training_options.json)."""
    return read_config(directory)[0]


def load_weights(directory: str | Path, recorded: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The denoiser weights of a model directory, and where they came from: model.safetensors
    (checked against the SHA-256 `recorded` in config.json; a notice when it records none), else (a
    run still training or interrupted) the EMA of its newest valid training state."""
    directory = Path(directory)
    if (directory / MODEL_FILE).is_file():
        check_weights_file(directory / MODEL_FILE, recorded)
        return load_tensors(directory / MODEL_FILE), MODEL_FILE
    found = load_latest_state(directory)
    if found is None:
        raise CheckpointError(f"{directory} has neither {MODEL_FILE} nor a training state in {STATE_DIR}/")
    tensors, meta = found
    return ({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")},
            f"the EMA of training state {meta['step']} ({meta['nimg'] / 1000:g} kimg; training unfinished)")


def check_weights_file(path: Path, recorded: str | None) -> None:
    """model.safetensors must have the SHA-256 its config.json records (a flipped byte, a swapped file);
    directories of older lowdiff versions record none and load with a notice."""
    if recorded is None:
        warnings.warn(f"{path.parent}: {CONFIG_FILE} records no checksum of {MODEL_FILE} (written by an older "
                      "lowdiff), so corrupt weights cannot be detected")
    elif sha256(path) != recorded:
        raise CheckpointError(f"{path} does not match the SHA-256 recorded in {CONFIG_FILE} (corrupt or replaced); "
                              "copy the model directory again")


def check_tensors(state: dict[str, torch.Tensor], model: torch.nn.Module, where: Path) -> None:
    """Every stored tensor has the kind of its parameter (floating where the network is floating) and
    finite values; the first that is not is named."""
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and expected[name].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"{where}: tensor {name} is stored as {tensor.dtype}, the network needs floating "
                                  "point; the weights are corrupt")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: tensor {name} holds NaN or inf values; the weights are corrupt")


def from_pretrained(directory: str | Path, config: tuple[Preset, str | None] | None = None
                    ) -> tuple[Preset, Denoiser, str]:
    """(preset, denoiser with its weights, where the weights came from) of a model directory; `config`:
    its `read_config`, when the caller has read it already (config.json is read once per load)."""
    preset, recorded = config or read_config(directory)
    try:
        preset.validate()
        model = Denoiser.from_preset(preset)
    except ConfigError as e:                                   # a network that cannot be built from config.json
        raise CheckpointError(f"{config_file(directory)}: {e}") from None
    state, source = load_weights(directory, recorded)
    check_tensors(state, model, Path(directory) / source if source == MODEL_FILE else Path(directory))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:                                  # a tensor of the wrong shape
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise CheckpointError(f"{directory}: weights do not match config.json ({first.strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not match config.json "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return preset, model, source


# --- training states --------------------------------------------------------------------

def save_state(run_dir: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
               keep: int = 2) -> Path:
    d = Path(run_dir) / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensor_path = d / f"state-{step:09d}.safetensors"
    save_tensors(tensor_path, tensors)
    write_json(d / f"state-{step:09d}.json", {**meta, "step": step, "sha256": sha256(tensor_path)})
    for old in sorted(d.glob("state-*.json"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return tensor_path


def state_files(run_dir: str | Path) -> list[Path]:
    """The training-state JSON files of a run, newest first."""
    d = Path(run_dir) / STATE_DIR
    return sorted(d.glob("state-*.json"), reverse=True) if d.is_dir() else []


def load_latest_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest training state that passes its checksum; older ones are tried with a
    warning when the newest is corrupt. None when the run has no state yet; CheckpointError
    when it has states but none is readable (never a silent fresh start)."""
    bad = []
    for meta_path in state_files(run_dir):
        tensor_path = meta_path.with_suffix(".safetensors")
        try:
            meta = read_json(meta_path)
            if not tensor_path.is_file() or sha256(tensor_path) != meta["sha256"]:
                raise CheckpointError(f"{tensor_path.name} is missing or fails its checksum")
            return load_tensors(tensor_path), meta
        except (CheckpointError, ConfigError, KeyError, TypeError) as e:
            bad.append(f"{meta_path.name} ({e})")
            warnings.warn(f"skipping corrupt training state {meta_path.name}: {e}; trying an older one")
    if bad:
        raise CheckpointError(f"every training state in {Path(run_dir) / STATE_DIR} is corrupt: {'; '.join(bad)}. "
                              "Start afresh with --restart (or a new --out directory)")
    return None
