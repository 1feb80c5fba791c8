"""Sampling, evaluation and tuning under torchrun (gloo, 2 CPU processes) equal one process:
the same PNG files, grid, labels.csv, statistics, FID and tuned plan; a killed rank ends the
launch with a message instead of a hang."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_preset
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.eval.classifier import ImageClassifier
from lowdiff.storage import save_pretrained

pytestmark = pytest.mark.slow          # every test here launches processes

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny class-conditional model, an untrained classifier, reference statistics."""
    d = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    preset = tiny_preset(stages=(16, 32), label_dim=10)
    save_pretrained(d / "model", preset, Denoiser.from_preset(preset).state_dict())
    clf = ImageClassifier(width=4)
    (d / "clf").mkdir()
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(d / "clf" / "classifier.safetensors"))
    (d / "clf" / "classifier.json").write_text(json.dumps({"arch": clf.arch()}))
    run(["eval", "ref", "--data", "synthetic:40", "--classifier", str(d / "clf"), "--out", str(d / "ref.npz")])
    return d


def run(args, ranks=1, **kw):
    launcher = TORCHRUN if ranks == 2 else [sys.executable]
    r = subprocess.run([*launcher, "-m", "lowdiff.cli", *args, "--no-progress"], env=ENV, timeout=300,
                       capture_output=True, text=True, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def both(make_args):
    """Run the command in one process and in two; their outputs side by side."""
    return [run(make_args(ranks), ranks=ranks) for ranks in (1, 2)]


def test_sample_folder_and_grid_equal_one_process(assets, tmp_path):
    model = str(assets / "model")
    both(lambda n: ["sample", "--checkpoint", model, "-n", "7", "--batch", "2", "--random-class",
                    "--out", str(tmp_path / f"f{n}")])
    files = sorted(p.name for p in (tmp_path / "f1").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "f2").iterdir()) and len(files) == 8     # 7 PNGs + labels
    for name in files:
        assert (tmp_path / "f1" / name).read_bytes() == (tmp_path / "f2" / name).read_bytes(), name
    both(lambda n: ["sample", "--checkpoint", model, "-n", "10", "--batch", "3", "--out", str(tmp_path / f"g{n}.png")])
    assert (tmp_path / "g1.png").read_bytes() == (tmp_path / "g2.png").read_bytes()


def test_eval_ref_and_fid_equal_one_process(assets, tmp_path):
    clf = ["--classifier", str(assets / "clf")]
    both(lambda n: ["eval", "ref", "--data", "synthetic:37", *clf, "--out", str(tmp_path / f"r{n}.npz")])
    a, b = np.load(tmp_path / "r1.npz"), np.load(tmp_path / "r2.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files) and int(a["num"]) == 37
    one, two = both(lambda n: ["eval", "fid", "--checkpoint", str(assets / "model"), "--ref", str(assets / "ref.npz"),
                               *clf, "-n", "9", "--batch", "2"])
    assert json.loads(one.stdout)["fid"] == json.loads(two.stdout)["fid"]
    assert "on 2 processes" in two.stderr


def test_tune_gives_one_process_plan(assets, tmp_path):
    both(lambda n: ["tune", "--checkpoint", str(assets / "model"), "--ref", str(assets / "ref.npz"), "--classifier",
                    str(assets / "clf"), "--budget-nfe", "8", "--cost", "flops", "-n", "6", "--screen-num", "4",
                    "--batch", "2", "--trials", "4", "--confirm", "2", "--out", str(tmp_path / f"p{n}.json")])
    one, two = (json.loads((tmp_path / f"p{n}.json").read_text()) for n in (1, 2))
    assert one["stages"] == two["stages"] and one["tuned"]["fid"] == two["tuned"]["fid"]


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of the worker with LOCAL_RANK=rank among the launcher's children."""
    for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={rank}".encode() in env:
            return int(child)
    return None


def test_a_killed_rank_ends_the_launch_with_a_message(assets, tmp_path):
    out = tmp_path / "big"
    launcher = subprocess.Popen([*TORCHRUN, "-m", "lowdiff.cli", "sample", "--checkpoint", str(assets / "model"),
                                 "--seeds", "0-9999999", "--batch", "2", "--out", str(out), "--no-progress"],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out.is_dir() and len(list(out.glob("*.png"))) >= 4):
            time.sleep(0.2)
        assert len(list(out.glob("*.png"))) >= 4, "sampling never started"
        pid = _rank_pid(launcher, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)          # no hang
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "interrupted" in err or "failed" in err.lower()
    files = sorted(out.glob("*.png"))
    rows = (out / "labels.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [p.name for p in files]          # labels.csv = the images written


def test_a_huge_seed_range_streams_into_a_folder_and_is_refused_for_a_grid(assets, tmp_path):
    """--seeds 0-9999999999 is never materialised: images appear at once, memory stays flat,
    SIGTERM keeps what is finished; a grid that large is refused in one line before any work."""
    r = subprocess.run([sys.executable, "-m", "lowdiff.cli", "sample", "--checkpoint", str(assets / "model"),
                        "--seeds", "0-9999999999", "--out", str(tmp_path / "g.png")], env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "a grid of 10,000,000,000 images is too large" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    out = tmp_path / "many"
    proc = subprocess.Popen([sys.executable, "-m", "lowdiff.cli", "sample", "--checkpoint", str(assets / "model"),
                             "--seeds", "0-9999999999", "--batch", "2", "--out", str(out), "--no-progress"],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("*.png"))) < 6:
            time.sleep(0.2)
        rss_mb = int(next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS")).split()[1]) / 1024
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rss_mb < 2000, rss_mb                       # a list of 10^10 seeds alone would take ~300 GB
    assert proc.returncode == 130 and "images finished are in" in err
    rows = (out / "labels.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == sorted(p.name for p in out.glob("*.png"))
