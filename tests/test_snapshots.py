"""`lowdiff train --snapshot-kimg` (issue 38): the EMA every N kimg as a loadable model directory
with the run's compute beside it, equal to the model a run of that length saves, and kept or
completed when a run resumes."""
import shutil

import torch

from helpers import run
from lowdiff import storage
from lowdiff.data import make_synthetic
from lowdiff.train.compute import training_tflop
from lowdiff.train.loop import Trainer
from lowdiff.train.snapshots import list_snapshots, snapshot_name

NAMES = ["kimg-000000.016", "kimg-000000.032", "kimg-000000.048"]


def weights(directory):
    return storage.load_tensors(directory / storage.MODEL_FILE)


def equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_snapshots_are_the_ema_of_shorter_runs_with_their_compute(tiny, tmp_path, capsys, one_thread):
    preset = tiny(label_dim=3)                    # batch 8, a state every 16 images
    Trainer(preset, make_synthetic(16, num_classes=3), tmp_path / "long", snapshot_kimg=0.016).run(0.048, False)
    snaps = list_snapshots(tmp_path / "long")
    assert [d.name for d, _ in snaps] == NAMES
    assert [c["nimg"] for _, c in snaps] == [16, 32, 48]
    assert [c["train_tflop"] for _, c in snaps] == [training_tflop(preset, n) for n in (16, 32, 48)]
    assert all(c["thread_seconds"] > 0 for _, c in snaps)
    assert equal(weights(snaps[-1][0]), weights(tmp_path / "long"))        # the last is the final EMA
    Trainer(tiny(label_dim=3), make_synthetic(16, num_classes=3), tmp_path / "short").run(0.032, False)
    assert equal(weights(snaps[1][0]), weights(tmp_path / "short"))        # = a run of that length
    code, _, err = run(capsys, "sample", "--checkpoint", snaps[0][0], "--seeds", "0-1", "--class", "1",
                       "--out", tmp_path / "grid.png", "--no-progress")
    assert code == 0 and (tmp_path / "grid.png").is_file(), err


def test_a_resumed_run_keeps_its_snapshots_and_writes_the_missing_ones(tiny, tmp_path, one_thread):
    def train(kimg):
        Trainer(tiny(), make_synthetic(16), tmp_path / "run", snapshot_kimg=0.016).run(kimg, False)

    train(0.032)
    first = (tmp_path / "run" / "snapshots" / NAMES[0] / storage.MODEL_FILE).stat().st_mtime_ns
    second = weights(tmp_path / "run" / "snapshots" / NAMES[1])
    shutil.rmtree(tmp_path / "run" / "snapshots" / NAMES[1])   # as if stopped after its state, before it
    train(0.048)
    assert [d.name for d, _ in list_snapshots(tmp_path / "run")] == NAMES
    assert (tmp_path / "run" / "snapshots" / NAMES[0] / storage.MODEL_FILE).stat().st_mtime_ns == first
    assert equal(weights(tmp_path / "run" / "snapshots" / NAMES[1]), second)


def test_snapshot_names_sort_in_training_order():
    names = [snapshot_name(n) for n in (16, 1000, 5000, 5500, 40000)]
    assert names == ["kimg-000000.016", "kimg-000001", "kimg-000005", "kimg-000005.500", "kimg-000040"]
    assert sorted(names) == names
