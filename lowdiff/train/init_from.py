"""`lowdiff train --init-from MODEL`: a LowDiff run started from a trained single-resolution
model of the same family (a lowdiff model directory or `bundled:NAME`, or a `.safetensors`
state dict exported from EDM's own code), checked against the preset before any training.
The weights are set by `nn.baseline.load_baseline`: at step 0 the top-resolution stage
computes what the baseline computes. A consistency-tuning preset (`Preset.consistency`)
instead continues a trained model of its own network, all weights copied.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import bundled, storage
from ..config import Preset
from ..diffusion.denoiser import Denoiser
from ..errors import CheckpointError, ConfigError
from ..nn import build_network
from ..nn.baseline import load_baseline
from ..nn.unet import convert_edm_state_dict

# Settings a single-resolution model and a cascade of it may differ in: the cascade's own
# resolutions and condition-noise switch, and the dropouts (regularisation, not weights).
NOT_COMPARED = {"resolutions", "base_resolution", "cond_noise_embedding", "dropout", "label_dropout"}
FAMILIES = {"unet": "a U-Net (EDM family)", "dit": "a DiT (flow family)"}


@dataclass
class Baseline:
    """The weights a run starts from and where they came from."""
    spec: str
    state: dict[str, torch.Tensor]           # the single-resolution network's state dict, our key names
    whole: bool = False                      # the state is the whole denoiser's (a model of the same network)

    def apply(self, model: Denoiser) -> None:
        """Start `model` from these weights: all of them, or (a baseline) its unified network's as
        nn.baseline.load_baseline sets them."""
        if self.whole:
            model.load_state_dict(self.state)
        else:
            load_baseline(model.nets["unified"], self.state)


def first_mismatch(baseline: Preset, preset: Preset) -> str | None:
    """The first setting in which `baseline` is not the single-resolution network of `preset`'s
    cascade: family, resolution, the network's sizes in declaration order, preconditioning."""
    a, b = baseline.network, preset.network
    if a.arch != b.arch:
        return f"family: it is {FAMILIES[a.arch]}, preset {preset.name} {FAMILIES[b.arch]}"
    if len(a.resolutions) != 1:
        return (f"resolutions: it is a cascade ({', '.join(map(str, a.resolutions))}); start from a "
                "single-resolution model")
    if a.resolutions[0] != max(b.resolutions):
        return f"resolution: it generates at {a.resolutions[0]}, preset {preset.name} at {max(b.resolutions)}"
    for f in dataclasses.fields(a):
        mine, theirs = getattr(a, f.name), getattr(b, f.name)
        if f.name not in NOT_COMPARED and mine != theirs:
            return f"network {f.name}: {mine} there, {theirs} in preset {preset.name}"
    if baseline.precond.to_config() != preset.precond.to_config():
        return (f"preconditioning: {baseline.precond.to_config()} there, {preset.precond.to_config()} in preset "
                f"{preset.name}")
    return None


def load_baseline_for(spec: str, preset: Preset) -> Baseline:
    """The baseline `spec` names, checked against `preset` (one ConfigError naming the first
    mismatched setting, or the missing / extra / mis-shaped keys of an EDM export)."""
    where = f"--init-from {spec}"
    if preset.consistency is not None:
        return trained_model_for(spec, preset)
    if not preset.unified:
        raise ConfigError(f"{where}: preset {preset.name} has one network per stage (CDM); --init-from starts a "
                          "unified network")
    try:
        path = bundled.resolve(spec)
        if path.is_file() and path.suffix == ".safetensors":
            return Baseline(spec, edm_export(path, preset, where))
        config = storage.read_config(path)
        baseline = config[0]
        mismatch = first_mismatch(baseline, preset)
        if mismatch:
            raise ConfigError(f"{where}: does not fit preset {preset.name}: {mismatch}")
        _, model, _ = storage.from_pretrained(path, config)
    except CheckpointError as e:
        raise ConfigError(f"{where}: {e}") from None
    return Baseline(spec, model.net_for(baseline.network.resolutions[0]).state_dict())


def same_network_mismatch(model: Preset, preset: Preset) -> str | None:
    """The first setting in which `model` is not a model of `preset`'s own network (dropouts aside)."""
    a, b = model.network, preset.network
    if a.arch != b.arch:
        return f"family: it is {FAMILIES[a.arch]}, preset {preset.name} {FAMILIES[b.arch]}"
    for f in dataclasses.fields(a):
        if f.name not in ("dropout", "label_dropout") and getattr(a, f.name) != getattr(b, f.name):
            return f"network {f.name}: {getattr(a, f.name)} there, {getattr(b, f.name)} in preset {preset.name}"
    for name in ("unified", "cond_scaling"):
        if getattr(model, name) != getattr(preset, name):
            return f"{name}: {getattr(model, name)} there, {getattr(preset, name)} in preset {preset.name}"
    if model.precond.to_config() != preset.precond.to_config():
        return f"preconditioning: {model.precond.to_config()} there, {preset.precond.to_config()} in preset {preset.name}"
    return None


def trained_model_for(spec: str, preset: Preset) -> Baseline:
    """Consistency tuning's starting point: a trained lowdiff model of `preset`'s own network (the
    preset it tunes), every weight copied; one ConfigError for a model of another preset."""
    where = f"--init-from {spec}"
    try:
        path = bundled.resolve(spec)
        if path.is_file():
            raise ConfigError(f"{where}: consistency tuning ({preset.name}) starts from a lowdiff model directory of "
                              "the preset it tunes, not a weight file")
        config = storage.read_config(path)
        model = config[0]
        mismatch = same_network_mismatch(model, preset)
        if mismatch:
            raise ConfigError(f"{where}: a {model.name} model; consistency tuning ({preset.name}) starts from a "
                              f"trained model of the same network ({mismatch})")
        _, denoiser, _ = storage.from_pretrained(path, config)
    except CheckpointError as e:
        raise ConfigError(f"{where}: {e}") from None
    return Baseline(spec, denoiser.state_dict(), whole=True)


def edm_export(path: Path, preset: Preset, where: str) -> dict[str, torch.Tensor]:
    """An EDM SongUNet state dict (README: saved from EDM's own code with safetensors) in our key
    names, refused unless its keys and shapes are exactly those of `preset`'s top-resolution network.
    It carries no preconditioning: the preset's is used."""
    if preset.network.arch != "unet":
        raise ConfigError(f"{where}: a .safetensors file is read as an EDM U-Net state dict, but preset "
                          f"{preset.name} is {FAMILIES[preset.network.arch]}; pass a lowdiff model directory")
    top = max(preset.resolutions)
    state = convert_edm_state_dict(storage.load_tensors(path), preset.network.img_resolution)
    with torch.device("meta"):
        single = dataclasses.replace(preset.network, resolutions=(top,), base_resolution=top)
        expected = build_network(single).state_dict()
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    shapes = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in sorted(state.items())
              if k in expected and v.shape != expected[k].shape]
    problems = [f"{what} {_few(keys)}" for what, keys in (("missing", missing), ("unexpected", extra),
                                                           ("wrong shape", shapes)) if keys]
    if problems:
        raise ConfigError(f"{where}: not an EDM state dict of preset {preset.name}'s network ({'; '.join(problems)})")
    return {k: v.float() for k, v in state.items()}


def _few(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
