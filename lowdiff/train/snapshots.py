"""Snapshots of a run's EMA every `--snapshot-kimg` (issue 38): model directories (config.json +
model.safetensors, what `lowdiff sample` / `lowdiff eval fid --checkpoint DIR` load) under
RUN/snapshots/kimg-NNNNNN/, each with `compute.json` beside the weights (the images seen, kimg,
`train_tflop`, `thread_seconds` at that point).

Snapshot k is taken at the first step whose image count reaches k x the interval, which is
exactly where a run of `--duration-kimg` k x the interval stops. Nothing in training depends on
the duration (the learning-rate ramp, the EMA half-life and its ramp-up, the data order and the
noise are functions of the images seen and the step), so the snapshot holds the EMA that run
would have saved: one long run gives every shorter budget's model. A snapshot directory is
written under a temporary name and renamed, so one that exists is complete; a resumed run keeps
those it has and writes the rest.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .. import storage
from ..config import Preset
from ..files import read_json, write_json

SNAPSHOT_DIR, COMPUTE_FILE = "snapshots", "compute.json"


def interval_images(snapshot_kimg: float) -> int:
    """The snapshot interval in images (at least one)."""
    return max(1, round(snapshot_kimg * 1000))


def is_due(nimg: int, batch: int, every: int) -> bool:
    """True at the step whose image count `nimg` first reaches a multiple of `every`."""
    return nimg > 0 and nimg // every > (nimg - batch) // every


def snapshot_name(nimg: int) -> str:
    """kimg-000005 for 5,000 images, kimg-000000.016 for 16 (names sort in training order)."""
    whole, rest = divmod(nimg, 1000)
    return f"kimg-{whole:06d}" + (f".{rest:03d}" if rest else "")


def write_snapshot(run_dir: Path, budget_nimg: int, preset: Preset, ema: dict[str, torch.Tensor],
                   compute: dict) -> Path:
    """RUN/snapshots/<snapshot_name(budget_nimg)>: the EMA as a model directory and `compute`
    (the run's figures at this step) in compute.json; kept as it is when it exists already."""
    final = run_dir / SNAPSHOT_DIR / snapshot_name(budget_nimg)
    if (final / COMPUTE_FILE).is_file():
        return final
    partial = final.with_name(f".partial-{final.name}")
    shutil.rmtree(partial, ignore_errors=True)
    storage.save_pretrained(partial, preset, ema)
    write_json(partial / COMPUTE_FILE, compute)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def list_snapshots(run_dir: str | Path) -> list[tuple[Path, dict]]:
    """A run's complete snapshots in training order: (model directory, its compute.json)."""
    root = Path(run_dir) / SNAPSHOT_DIR
    found = sorted(d for d in root.glob("kimg-*") if (d / COMPUTE_FILE).is_file()) if root.is_dir() else []
    return [(d, read_json(d / COMPUTE_FILE)) for d in found]
