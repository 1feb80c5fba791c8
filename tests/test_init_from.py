"""`lowdiff train --init-from` (issue 38): a cascade started from a trained single-resolution
model computes exactly what that model computes at the top resolution at step 0, EDM's own
state dicts are mapped key by key, a model of another architecture is one line naming the
first mismatched setting, and a run started this way resumes like any other."""
import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from helpers import dit_cascade_from_baseline, run, stopped_and_resumed, to_edm_layout
from lowdiff import storage
from lowdiff.data import make_synthetic
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.errors import ConfigError
from lowdiff.presets import get_preset
from lowdiff.train.init_from import first_mismatch, load_baseline_for
from lowdiff.train.loop import Trainer

EDM = "bundled:fashion-edm-cond"


def top_stage_outputs(model: Denoiser, seed: int = 0) -> list[torch.Tensor]:
    """D at 32x32 over the noise range, class labels, and (for a cascade) random conditions."""
    g = torch.Generator().manual_seed(seed)
    x, labels, out = torch.randn(6, 1, 32, 32, generator=g), torch.eye(10)[[0, 3, 5, 7, 9, 2]], []
    cascade = len(model.resolutions) > 1
    for sigma in (0.002, 0.1, 1.0, 10.0, 80.0):
        kw = dict(cond=3 * torch.randn(6, 1, 32, 32, generator=g), sigma_cond=10 * torch.rand(6, generator=g))
        with torch.no_grad():
            out.append(model(x * sigma, torch.full((6,), sigma), labels, **(kw if cascade else {})))
    return out


def test_at_step_0_the_cascade_at_32x32_is_the_bundled_edm_model_for_any_condition(tmp_path):
    """Through the trainer: model and EMA of a new run equal EDM's denoiser to float precision."""
    _, edm, _ = storage.from_pretrained(storage.model_dir(EDM))
    preset = get_preset("lowdiff-fashion-tiny-cond")
    trainer = Trainer(preset, make_synthetic(16, num_classes=10), tmp_path / "run",
                      init_from=load_baseline_for(EDM, preset))
    assert trainer.start() is False
    for model in (trainer.model.eval(), trainer.ema):
        for ours, theirs in zip(top_stage_outputs(model), top_stage_outputs(edm.eval())):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_an_edm_state_dict_is_mapped_to_our_keys_and_bad_keys_are_named(tmp_path):
    preset = get_preset("lowdiff-fashion-tiny-cond")
    ours = load_baseline_for(EDM, preset).state
    edm = to_edm_layout(ours, 32)
    save_file(edm, str(tmp_path / "edm.safetensors"))
    mapped = load_baseline_for(str(tmp_path / "edm.safetensors"), preset).state
    assert mapped.keys() == ours.keys() and all(torch.equal(mapped[k], v) for k, v in ours.items())
    for name, change, named in (
            ("missing", lambda d: d.pop("model.map_label.weight"), "missing map_label.weight"),
            ("extra", lambda d: d.update({"model.enc.64x64_conv.weight": torch.zeros(1)}), "unexpected enc.64x64_conv"),
            ("shape", lambda d: d.update({"model.dec.32x32_aux_conv.weight": torch.zeros(3, 32, 3, 3)}),
             "wrong shape outputs.32x32.conv.weight (3, 32, 3, 3) (expected (1, 32, 3, 3))")):
        bad = dict(edm)
        change(bad)
        save_file(bad, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ConfigError, match=re.escape(named)):
            load_baseline_for(str(tmp_path / f"{name}.safetensors"), preset)


@pytest.mark.parametrize("change,named", [
    (lambda p: dataclasses.replace(p.network, model_channels=32), "network model_channels: 32 there, 16"),
    (lambda p: dataclasses.replace(p.network, channel_mult=(1, 2, 2)), "network channel_mult"),
    (lambda p: dataclasses.replace(p.network, in_channels=3, out_channels=3), "network in_channels"),
    (lambda p: dataclasses.replace(p.network, label_dim=3), "network label_dim: 3 there, 10"),
    (lambda p: dataclasses.replace(p.network, resolutions=(16,), base_resolution=16), "resolution: it generates at 16"),
    (lambda p: dataclasses.replace(p.network, resolutions=(16, 32), base_resolution=16), "it is a cascade"),
])
def test_a_mismatched_baseline_names_its_first_mismatched_setting(tiny, change, named):
    baseline = tiny(stages=(32,), label_dim=10)
    baseline.network = change(baseline)
    assert named in first_mismatch(baseline, tiny(label_dim=10))


def test_family_and_preconditioning_mismatches(tiny):
    from conftest import tiny_dit_preset
    assert "family: it is a DiT" in first_mismatch(tiny_dit_preset(stages=(8,)), tiny())
    assert "preconditioning" in first_mismatch(tiny(stages=(32,), precond="vp"), tiny())
    assert first_mismatch(tiny(stages=(32,)), tiny()) is None


def test_the_dit_family_starts_from_its_flow_baseline():
    """The unified DiT at its top side equals the single-side DiT it started from."""
    base, low = dit_cascade_from_baseline()
    x, labels = torch.randn(3, 4, 8, 8), torch.eye(10)[:3]
    with torch.no_grad():
        ours = low(x, torch.full((3,), 0.4), labels, cond=torch.randn(3, 4, 8, 8), sigma_cond=torch.rand(3))
        theirs = base(x, torch.full((3,), 0.4), labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_train_init_from_on_the_command_line_then_resume(tiny, tmp_path, capsys, one_thread):
    """Re-running the same command resumes from the run's state (no second initialisation), and the
    resumed run equals an uninterrupted one; a mismatch is one line before any training."""
    torch.manual_seed(1)
    baseline = tiny(stages=(32,), label_dim=10)
    storage.save_pretrained(tmp_path / "base", baseline, Denoiser.from_preset(baseline).state_dict())
    (tmp_path / "cascade.json").write_text(json.dumps(tiny(label_dim=10).to_dict()))
    args = ["train", "--preset", tmp_path / "cascade.json", "--data", "synthetic:16", "--init-from",
            tmp_path / "base", "--no-progress"]
    stopped_and_resumed(capsys, args, tmp_path)
    assert [json.loads(r)["step"] for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    code, _, err = run(capsys, "train", "--preset", "lowdiff-fashion-tiny-cond", "--out", tmp_path / "c",
                       "--init-from", tmp_path / "base")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "network model_channels" in err, err
    assert not (tmp_path / "c").exists()
