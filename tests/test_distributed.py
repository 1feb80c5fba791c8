"""Scale-out and survival: torchrun/DDP on gloo equals one process, gradient accumulation
equals a full batch, and a SIGKILLed run resumes to the same weights as an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_preset

pytestmark = pytest.mark.slow          # every test here launches processes

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def preset_file(tmp_path, **train):
    p = tiny_preset(stages=(16, 32))
    for k, v in train.items():
        setattr(p.train, k, v)
    path = tmp_path / "preset.json"
    path.write_text(p.to_json())
    return path


def train_cmd(preset, out, kimg, *extra):
    return ["-m", "lowdiff.cli", "train", "--preset", str(preset), "--data", "synthetic:48", "--out", str(out),
            "--duration-kimg", str(kimg), "--no-progress", *extra]


def weights(run):
    return load_file(str(run / "model.safetensors"))


def assert_close(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), k


def test_two_gloo_processes_equal_one_process(tmp_path):
    preset = preset_file(tmp_path, batch=8)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, *train_cmd(preset, single, 0.024)], check=True, env=ENV, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    *train_cmd(preset, ddp, 0.024)], check=True, env=ENV, timeout=300)
    assert_close(weights(single), weights(ddp), atol=1e-4)


def test_ranks_agree_on_an_unresumable_out_dir(tmp_path):
    """Every rank reads --out before rank 0 writes into it (a barrier), so all ranks see the
    same folder: here all refuse it with the same message, and the launch ends without hanging."""
    preset = preset_file(tmp_path, batch=8)
    out = tmp_path / "ddp"
    out.mkdir()
    (out / "log.jsonl").write_text("")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        *train_cmd(preset, out, 0.008)], env=ENV, timeout=120, capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.count("no training state to resume from") == 2


def test_gradient_accumulation_equals_full_batch(tiny, tmp_path):
    from lowdiff.data import make_synthetic
    from lowdiff.train.loop import Trainer
    ds = make_synthetic(32)
    full = Trainer(tiny(), ds, tmp_path / "a")
    full.run(0.024, progress=False)
    p = tiny()
    p.train.batch_gpu = 2
    accum = Trainer(p, ds, tmp_path / "b")
    accum.run(0.024, progress=False)
    # Summation order differs, so gradients agree to rounding; Adam's normalisation can lift
    # a rounding difference of a tiny gradient to a fraction of lr (1e-3) per step.
    for a, b in zip(full.model.parameters(), accum.model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)


def test_batch_not_divisible_by_ranks_is_rejected():
    from lowdiff.errors import ConfigError
    from lowdiff.train.loop import split_batch
    assert split_batch(64, 2, 8) == (32, 4)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        split_batch(64, 3, 0)
    with pytest.raises(ConfigError, match="batch_gpu"):
        split_batch(64, 2, 5)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    preset = preset_file(tmp_path, batch=8, checkpoint_kimg=0.008, keep_checkpoints=3)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    steps = 10
    subprocess.run([sys.executable, *train_cmd(preset, clean, steps * 0.008)], check=True, env=ENV, timeout=300)
    proc = subprocess.Popen([sys.executable, *train_cmd(preset, killed, steps * 0.008)], env=ENV)
    target = killed / "checkpoints" / "state-000000004.json"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, *train_cmd(preset, killed, steps * 0.008)], check=True, env=ENV, timeout=300)
    a, b = weights(clean), weights(killed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_writes_a_state_and_exits_cleanly(tmp_path):
    preset = preset_file(tmp_path, batch=8, checkpoint_kimg=100)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *train_cmd(preset, run, 100)], env=ENV, stderr=subprocess.PIPE, text=True)
    log = run / "log.jsonl"
    deadline = time.time() + 240
    while (not log.exists() or not log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert "state saved" in err
    assert list((run / "checkpoints").glob("state-*.json"))
