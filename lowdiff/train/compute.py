"""Training compute as a number: what a run has spent (FLOPs and one-thread seconds, both in
every log.jsonl record) and runs sized by it (`--duration-tflop`, `--match-compute RUN_DIR`).

FLOPs per image are the network's per-resolution count (`info.training_flops_per_image`:
forward + backward = 3x the forward, 4x with consistency tuning's target pass, summed over the stage
resolutions), so a run's compute
is its images times that count. One-thread seconds are wall seconds times the CPU threads
the run uses: torch's intra-op threads (OMP_NUM_THREADS) of each process, times the
processes; on a GPU they still count CPU threads, so compare them only between CPU runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import bundled, storage
from ..config import Preset
from ..errors import CheckpointError, ConfigError
from ..info import training_flops_per_image

LOG_FILE = "log.jsonl"
TRAINING_FILE = "training.json"     # a bundled model's copy of its run's compute (scripts/bundle_model.py)
COMPUTE_FIELDS = ("dataset", "kimg", "train_tflop", "thread_seconds")


def flops_per_image(preset: Preset) -> float:
    """Training FLOPs of one image: every stage resolution, forward and backward."""
    return float(sum(training_flops_per_image(preset).values()))


def training_tflop(preset: Preset, nimg: int) -> float:
    """The compute of `nimg` training images, in TFLOP."""
    return nimg * flops_per_image(preset) / 1e12


def threads_in_use(world: int) -> int:
    """CPU threads of a run: torch's intra-op threads per process times the processes."""
    return torch.get_num_threads() * world


def duration_kimg_for(preset: Preset, tflop: float, option: str) -> float:
    """The training length (kimg) that spends `tflop`; at least one batch, else an error naming `option`."""
    per_image = flops_per_image(preset)
    batch_tflop = preset.train.batch * per_image / 1e12
    if not tflop >= batch_tflop:
        raise ConfigError(f"{option}: {tflop:g} TFLOP is less than one batch of {preset.name} ({preset.train.batch} "
                          f"images x {per_image / 1e9:.4g} GFLOP = {batch_tflop:.4g} TFLOP); ask for more")
    return tflop * 1e12 / per_image / 1000


@dataclass
class RecordedCompute:
    """What a finished or running run has spent, from the last record of its log."""
    run_dir: Path
    preset: Preset
    tflop: float
    dataset: str | None              # the dataset's name; None in logs written before it was recorded


def recorded_compute(run_dir: str | Path) -> RecordedCompute:
    """The compute a run recorded (its log's last record, or a bundled model's copy of it); older
    logs without `train_tflop` give their images times the run's FLOPs per image."""
    where = f"--match-compute {run_dir}"
    run_dir = bundled.resolve(run_dir)
    if not (run_dir / LOG_FILE).is_file() and not (run_dir / TRAINING_FILE).is_file():
        raise ConfigError(f"{where}: not a training run (no {LOG_FILE}); give the --out directory of a "
                          f"`lowdiff train` run or a model that keeps its run's {TRAINING_FILE}")
    try:
        preset = storage.load_config(run_dir)
        last = model_compute(run_dir)
        tflop = last["train_tflop"] if "train_tflop" in last else training_tflop(preset, round(last["kimg"] * 1000))
    except CheckpointError as e:
        raise ConfigError(f"{where}: not a training run ({e})") from None
    except (IndexError, json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{where}: its {LOG_FILE} holds no readable training record") from None
    return RecordedCompute(run_dir, preset, float(tflop), last.get("dataset"))


def model_compute(directory: str | Path) -> dict:
    """The training compute behind a model directory (COMPUTE_FIELDS that it recorded): a run's
    log's last record, or the copy of it a bundled model keeps in TRAINING_FILE."""
    directory = bundled.resolve(directory)
    log = directory / LOG_FILE
    if log.is_file():
        last = json.loads(log.read_text().splitlines()[-1])
    elif (directory / TRAINING_FILE).is_file():
        last = json.loads((directory / TRAINING_FILE).read_text())
    else:
        raise ConfigError(f"{directory}: no record of its training compute ({LOG_FILE} or {TRAINING_FILE})")
    if not isinstance(last, dict):
        raise TypeError(f"{directory}: its training record is not a JSON object")
    return {k: last[k] for k in COMPUTE_FIELDS if k in last}
