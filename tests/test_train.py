"""Training end to end on tiny configs: loss falls, checkpoints are safetensors + JSON,
resume equals an uninterrupted run, corrupt files give clear errors."""
import json

import pytest
import torch

from lowdiff.errors import ConfigError
from lowdiff.data import make_synthetic
from lowdiff.pipeline import load
from lowdiff import storage
from lowdiff.train.ema import ema_beta
from lowdiff.train.loop import Trainer, TrainingError, train


def test_ema_beta_follows_halflife_and_ramp():
    assert ema_beta(512, 10**9, 500, 0.05) == pytest.approx(0.5 ** (512 / 500_000))
    assert ema_beta(512, 10_000, 500, 0.05) == pytest.approx(0.5 ** (512 / 500))      # ramped: 0.05 * 10k
    assert ema_beta(512, 10_000, 500, None) == pytest.approx(0.5 ** (512 / 500_000))


@pytest.mark.slow
def test_train_writes_a_loadable_model_directory(tiny, tmp_path):
    preset = tiny(label_dim=10)
    out = train(preset, make_synthetic(64), tmp_path / "run", progress=False)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"loss_8", "loss_16", "loss_32"} <= set(log[0])
    pipe = load(out)
    result = pipe(4, seed=0, class_labels=[0, 1, 2, 3])
    assert result.images.shape == (4, 1, 32, 32) and result.images.dtype == torch.uint8


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny, tmp_path):
    ds = make_synthetic(40)
    full = Trainer(tiny(), ds, tmp_path / "a")
    full.run(duration_kimg=0.048, progress=False)          # 6 steps, states at 2 and 4

    part = Trainer(tiny(), ds, tmp_path / "b")
    part.run(duration_kimg=0.016, progress=False)           # stop after 2 steps
    resumed = Trainer(tiny(), ds, tmp_path / "b")
    resumed.run(duration_kimg=0.048, progress=False)
    assert resumed.step == full.step == 6
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_corrupt_checkpoints(tiny, tmp_path):
    out = train(tiny(), make_synthetic(16), tmp_path / "run", progress=False)
    (out / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(storage.CheckpointError, match="does not match the SHA-256 recorded in config.json"):
        load(out)
    config = json.loads((out / "config.json").read_text())
    del config["model_sha256"]                                   # a directory of an older lowdiff
    (out / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="records no checksum"), pytest.raises(storage.CheckpointError,
                                                                               match="truncated or corrupt"):
        load(out)
    with pytest.raises(storage.CheckpointError, match="config.json is missing"):
        load(tmp_path)
    # A corrupt newest training state falls back to the previous one, with a warning.
    states = sorted((out / "checkpoints").glob("state-*.safetensors"))
    assert len(states) == 2
    states[-1].write_bytes(states[-1].read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt"):
        tensors, meta = storage.load_latest_state(out)
    assert meta["step"] == int(states[0].stem.split("-")[1])


def test_dataset_preset_mismatch_is_rejected(tiny, tmp_path):
    with pytest.raises(ConfigError, match="channel"):
        Trainer(tiny(), _rgb(), tmp_path)
    with pytest.raises(ConfigError, match="32x32"):
        Trainer(tiny(), make_synthetic(8, resolution=16), tmp_path)


@pytest.mark.slow
def test_resuming_with_a_different_config_is_refused(tiny, tmp_path):
    train(tiny(), make_synthetic(16), tmp_path / "run", progress=False)
    other = tiny()
    other.train.lr = 0.5
    with pytest.raises(ConfigError, match="different configuration"):
        train(other, make_synthetic(16), tmp_path / "run", progress=False)


def _rgb():
    from lowdiff.data import make_synthetic as mk
    return mk(8, channels=3)


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_a_diagnostic_and_keeps_the_last_good_state(tiny, tmp_path):
    preset = tiny()
    preset.train.lr = 1e30                                  # weights blow up after the first update
    preset.train.checkpoint_kimg = 0.008                    # a state after every step
    trainer = Trainer(preset, make_synthetic(40), tmp_path / "run")
    with pytest.raises(TrainingError, match=r"non-finite loss at step \d+ .* resolution\(s\) \[") as err:
        trainer.run(duration_kimg=0.08, progress=False)
    assert "re-run the same command" in str(err.value)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    state = storage.load_latest_state(tmp_path / "run")
    assert state is not None and all(torch.isfinite(v).all() for v in state[0].values() if v.is_floating_point())


def test_lowdiff_train_validates_the_preset_once(tiny, tmp_path, capsys, monkeypatch):
    """Each check has one owner and runs once: `lowdiff train` validates its preset (and matches the
    unified network to the stages) before the data are read, and nothing checks it again."""
    from helpers import run

    from lowdiff import config
    from lowdiff.diffusion import denoiser
    calls = {"validate": 0, "check_unified": 0}
    validate, unified = config.Preset.validate, config.check_unified

    def counted_validate(self):
        calls["validate"] += 1
        return validate(self)

    def counted_unified(*args):
        calls["check_unified"] += 1
        return unified(*args)

    monkeypatch.setattr(config.Preset, "validate", counted_validate)
    monkeypatch.setattr(config, "check_unified", counted_unified)
    monkeypatch.setattr(denoiser, "check_unified", counted_unified)
    spec = tmp_path / "preset.json"
    spec.write_text(tiny().to_json())
    code, _, err = run(capsys, "train", "--preset", spec, "--data", "synthetic:16", "--out", tmp_path / "run",
                       "--no-progress", "--duration-kimg", "0.016")
    assert code == 0, err
    assert calls == {"validate": 1, "check_unified": 1}


def test_train_config_checks_its_precision_against_the_one_list():
    from lowdiff.checks import PRECISIONS
    from lowdiff.config import TrainConfig
    for name in PRECISIONS:
        TrainConfig(precision=name).validate()
    with pytest.raises(ConfigError, match="train precision 'fp8': choose fp32, bf16, fp16"):
        TrainConfig(precision="fp8").validate()
