"""Consistency tuning (issue 39): the parametrisation returns its input at each stage's boundary
exactly, one- and two-step consistency sampling depend on the seed only, a tuning run resumes like
any training, and bad input (a model of another preset, a step that does not shrink, the sampler
asked of a model not tuned for it) is one line before any work."""
import json

import pytest
import torch

from helpers import run, stopped_and_resumed
from lowdiff import storage
from lowdiff.diffusion.consistency import ConsistencyConfig, ConsistencyObjective
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.loss import BatchNoise
from lowdiff.diffusion.precond import consistency_output
from lowdiff.diffusion.solvers import SOLVERS, sample_consistency
from lowdiff.pipeline import Pipeline
from lowdiff.presets import consistency_tuned, get_preset


def tuned(tiny, seed=0):
    """A consistency preset of the tiny cascade and a random model of it (non-trivial outputs)."""
    preset = consistency_tuned(tiny(label_dim=10))
    torch.manual_seed(seed)
    model = Denoiser.from_preset(preset)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return preset, model


def test_the_parametrisation_returns_its_input_at_the_boundary_exactly(tiny):
    preset, model = tuned(tiny)
    g = torch.Generator().manual_seed(0)
    for r, s in preset.consistency.boundaries.items():        # s: 1/3-ish values, not exact in binary
        x, labels = torch.randn(4, 1, r, r, generator=g) * 7, torch.eye(10)[:4]
        kw = {} if r == preset.resolutions[0] else dict(cond=torch.randn(4, 1, r, r), sigma_cond=torch.rand(4))
        sigma = torch.full((4, 1, 1, 1), s)
        with torch.no_grad():
            out = consistency_output(x, model(x, sigma, labels, **kw), sigma, s)
        assert torch.equal(out, x)
        assert not torch.equal(consistency_output(x, model(x, 2 * sigma, labels, **kw), 2 * sigma, s), x)
    assert torch.equal(consistency_output(x.double(), torch.full_like(x.double(), 1e6), 0.0617, 0.0617), x.double())


def test_the_sampler_jumps_to_the_stage_end_and_counts_its_evaluations():
    """One step from T is f_s(x, T); the step from sigma_min to 0 costs nothing."""
    calls = []

    def denoise(x, t):
        calls.append(t)
        return torch.zeros_like(x)

    x = torch.ones(1, 1, 2, 2)
    out, nfe, reached = sample_consistency(denoise, x * 80, torch.tensor([80.0, 2.0]), max_nfe=1)
    assert (nfe, reached, calls) == (1, 2.0, [80.0]) and torch.allclose(out, x * 2)
    calls.clear()
    out, nfe, reached = sample_consistency(denoise, x * 80, torch.tensor([80.0, 1.0, 0.002, 0.0]),
                                           noise_fn=torch.zeros_like)
    assert (nfe, reached, calls) == (2, 0.0, [80.0, 1.0])
    assert torch.allclose(out, x * 0.002 * (0.002 / 1.0))          # to s = 0.002, then (s / 1) x from t = 1
    assert SOLVERS["consistency"].nfe(torch.tensor([80.0, 1.0, 0.002, 0.0])) == 2


def test_one_and_two_step_sampling_is_deterministic_per_seed(tiny, one_thread):
    preset, model = tuned(tiny)
    pipe = Pipeline(model, preset)
    assert set(pipe.plans.plans) == {"config"}
    from lowdiff.diffusion.consistency import named_plans
    plans = named_plans(preset.stages, preset.consistency.boundaries)
    for name, evaluations in (("one-step", 1), ("two-step", 2)):
        plan = plans[name][0]
        a = pipe(seeds=[5, 6, 7], stages=plan)
        b = pipe(seeds=[7, 6], stages=plan, batch=1)
        assert torch.equal(a.images[2], b.images[0]) and torch.equal(a.images[1], b.images[1])
        assert a.nfe == {8: evaluations, 16: evaluations, 32: evaluations}
        assert a.truncation_sigma == pytest.approx({r: s for r, s in preset.consistency.boundaries.items() if r < 32})
    one, two = (pipe(seeds=[5], stages=plans[n][0]).images for n in ("one-step", "two-step"))
    assert not torch.equal(one, two)


def test_the_step_shrinks_over_training_and_stays_above_the_boundary():
    config = ConsistencyConfig({8: 1.9, 32: 0.002})
    noise = BatchNoise(torch.Generator().manual_seed(0), 4096)
    t = config.sample_t(1.9, noise)
    assert t.min() > 1.9
    steps = [(t - config.partner(t, 1.9, nimg)).mean().item() for nimg in (0, 1000, 3000, 8000)]
    assert steps == sorted(steps, reverse=True) and steps[-1] < steps[0] / 10
    assert torch.equal(config.partner(t, 1.9, 0), torch.full_like(t, 1.9))    # a = 0: the denoising target
    late = t - config.partner(t, 1.9, 10 ** 6)                                  # a = 1000: the floor holds
    above = t > 2                                                              # (else r stops at the boundary)
    assert (late > 0).all() and torch.allclose(late[above], t[above] * config.min_step, rtol=1e-3)
    objective = ConsistencyObjective(config)
    assert objective.draw(None, torch.zeros(4096, 1, 8, 8), 8, BatchNoise(None, 4096))[0] == 1.9


def test_tuning_resumes_like_any_training_and_ships_its_plans(tiny, tmp_path, capsys, one_thread):
    """A run from a model of the same network, stopped and re-run, equals an uninterrupted one."""
    preset, model = tuned(tiny)
    base = tiny(label_dim=10)
    storage.save_pretrained(tmp_path / "base", base, model.state_dict())
    (tmp_path / "ct.json").write_text(json.dumps(preset.to_dict()))
    args = ["train", "--preset", tmp_path / "ct.json", "--data", "synthetic:16", "--init-from", tmp_path / "base",
            "--no-progress"]
    a = stopped_and_resumed(capsys, args, tmp_path)
    assert not all(torch.equal(a[k], v) for k, v in model.state_dict().items())
    records = [json.loads(r) for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and "consistency_stage" in records[-1]   # each process logs its end
    code, _, err = run(capsys, "sample", "--checkpoint", tmp_path / "a", "--plan", "two-step", "--num", "10",
                       "--out", tmp_path / "g.png", "--no-progress")
    assert code == 0 and "{8: 2, 16: 2, 32: 2}" in err, err


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "r"
    err = one_line_error(capsys, "train", "--preset", "lowdiff-fashion-tiny-cond-ct", "--out", out,
                         "--init-from", "bundled:fashion-edm-cond")
    assert "a edm-fashion-tiny-cond model" in err and "network resolutions" in err
    flat = get_preset("lowdiff-fashion-tiny-cond-ct").to_dict()
    flat["consistency"]["ratio"] = 1.0
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    err = one_line_error(capsys, "train", "--preset", tmp_path / "flat.json", "--out", out)
    assert "must shrink" in err
    err = one_line_error(capsys, "sample", "--stage", "32:solver=consistency", "--out", tmp_path / "g.png")
    assert "was not tuned for it" in err
    err = one_line_error(capsys, "sample", "--checkpoint", "bundled:fashion-edm-cond", "--solver", "consistency",
                         "--out", tmp_path / "g.png")
    assert "was not tuned for it" in err
    assert not out.exists() and not (tmp_path / "g.png").exists()
