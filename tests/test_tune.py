"""`lowdiff tune` on a tiny random model: the search, the plan file, `sample --plan`."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_dit_preset, tiny_preset
from lowdiff.cli import main
from lowdiff.errors import ConfigError
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.eval.classifier import ImageClassifier
from lowdiff.eval.features import ClassifierFeatures
from lowdiff.eval.tune import Trial, mark_pareto
from lowdiff.eval.tune_budget import CostModel, TuneOptions, fit_budget
from lowdiff.eval.tune_space import coordinates
from lowdiff.diffusion.plan import StagePlan
from lowdiff.storage import save_pretrained


@pytest.fixture
def fixtures(tiny, tmp_path):
    """A tiny model directory, an untrained classifier and reference statistics in its feature space."""
    torch.manual_seed(0)
    preset = tiny(stages=(16, 32))
    save_pretrained(tmp_path / "model", preset, Denoiser.from_preset(preset).state_dict())
    clf = ImageClassifier(width=4)
    (tmp_path / "clf").mkdir()
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(tmp_path / "clf" / "classifier.safetensors"))
    (tmp_path / "clf" / "classifier.json").write_text(json.dumps({"arch": clf.arch()}))
    feats = np.random.default_rng(0).normal(size=(64, clf.feature_dim))
    identity = ClassifierFeatures(clf).identity
    np.savez(tmp_path / "ref.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), **identity)
    return tmp_path


@pytest.mark.slow
def test_tune_writes_a_plan_that_sample_uses(fixtures, capsys):
    d = fixtures
    code = main(["tune", "--checkpoint", str(d / "model"), "--ref", str(d / "ref.npz"), "--classifier", str(d / "clf"),
                 "--budget-nfe", "12", "--cost", "flops", "--num", "10", "--batch", "10", "--trials", "3",
                 "--out", str(d / "plan.json"), "--save-as", "tuned", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((d / "model" / "plans.json").read_text())["plans"]["tuned"]      # --save-as: into the model
    assert saved["stages"] == json.loads((d / "plan.json").read_text())["stages"]
    assert saved["figures"]["samples"] == 10 and saved["figures"]["images_per_s"] > 0
    assert "Pareto front" in out and out.count("\n") >= 4 and (d / "plan.png").stat().st_size > 1000
    plan = json.loads((d / "plan.json").read_text())
    assert plan["tuned"]["effective_nfe"] <= 12 and plan["pareto_front"] and len(plan["stages"]) == 2
    stages = StagePlan.load(d / "plan.json")
    assert [s.resolution for s in stages] == [16, 32]
    code = main(["sample", "--checkpoint", str(d / "model"), "--plan", str(d / "plan.json"), "--num", "2",
                 "--out", str(d / "g.png"), "--no-progress"])
    err = capsys.readouterr().err
    nfe = stages.nfe_per_stage
    assert code == 0 and (d / "g.png").is_file() and str(nfe) in err
    code = main(["sample", "--checkpoint", str(d / "model"), "--num", "2", "--out", str(d / "g.png"), "--no-progress"])
    err = capsys.readouterr().err                   # its only measured plan is now the model's default
    assert code == 0 and "plan: tuned (" in err and str(nfe) in err


@pytest.mark.parametrize("checkpoint, name, message", [
    (None, "mine", "bundled models are part of the installed package"),
    ("bundled:fashion-edm-cond", "mine", "copy the model directory"),
    ("{d}/model", "config", "not 'config'"),
    ("{d}/model", "a b", "a plan name is letters"),
])
def test_tune_save_as_is_checked_before_any_work(fixtures, capsys, checkpoint, name, message):
    d = fixtures
    where = ["--checkpoint", checkpoint.format(d=d)] if checkpoint else []
    code = main(["tune", *where, "--ref", str(d / "ref.npz"), "--budget-nfe", "4", "--out", str(d / "p.json"),
                 "--save-as", name])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_tune_needs_a_budget(fixtures, capsys):
    d = fixtures
    code = main(["tune", "--checkpoint", str(d / "model"), "--ref", str(d / "ref.npz"), "--classifier", str(d / "clf"),
                 "--out", str(d / "plan.json")])
    assert code == 2 and "give a budget" in capsys.readouterr().err


def test_tune_rejects_unknown_solvers(fixtures, capsys):
    """A misspelt --solvers entry is an error, not a silently skipped start plan and moves."""
    d = fixtures
    code = main(["tune", "--checkpoint", str(d / "model"), "--ref", str(d / "ref.npz"), "--classifier", str(d / "clf"),
                 "--budget-nfe", "12", "--solvers", "heun,dpmpp", "--out", str(d / "plan.json"), "--no-progress"])
    assert code == 2 and "unknown solver(s) dpmpp" in capsys.readouterr().err and not (d / "plan.json").exists()


def test_fit_budget_and_search_space(tiny):
    stages = tiny().stages                                           # NFE 3 / 3 / 7
    costs = CostModel({8: 1.0, 16: 1.0, 32: 1.0}, batch=1)
    fitted = fit_budget(stages, costs, TuneOptions(budget_nfe=9))
    assert costs.effective_nfe(fitted) <= 9 and fitted[-1].steps < stages[-1].steps
    with pytest.raises(ConfigError, match="budget"):
        fit_budget(stages, costs, TuneOptions(budget_nfe=2))
    names = [name for name, _ in coordinates(stages, ("heun", "dpmpp2m"))]
    assert names[:4] == ["8:solver", "16:solver", "32:solver", "32:steps"] and "16:sigma_max" in names
    moves = dict(coordinates(stages, ("heun", "dpmpp2m")))["16:nfe"](stages)
    assert [m[1][1].nfe for m in moves] == [1, 2, 4, 5]


def test_fit_budget_orders(tiny):
    """The three ways to fit a plan into a budget: from the costliest stage, from the lower
    stages first (the final stage keeps its steps while it can), or in proportion."""
    from lowdiff.eval.tune_budget import FITS
    stages = tiny().stages                                           # NFE 3 / 3 / 7, final Heun 4 steps
    costs = CostModel({8: 0.1, 16: 0.3, 32: 1.0}, batch=1, weights={8: 0.1, 16: 0.3, 32: 1.0})
    opts = TuneOptions(budget_nfe=6)
    fits = {order: fit_budget(stages, costs, opts, order) for order in FITS}
    assert all(costs.effective_nfe(p) <= 6 for p in fits.values())
    assert fits[FITS[0]].nfe_per_stage == {8: 3, 16: 3, 32: 3}       # the final stage pays: 4 -> 2 steps
    assert fits[FITS[1]][-1].steps == 3 and fits[FITS[1]].nfe(1) == 1  # the lower stages pay first
    ratios = [fits[FITS[2]].nfe(i) / stages.nfe(i) for i in range(3)]
    assert max(ratios) - min(ratios) < 0.5                          # every stage keeps a similar share


def test_pareto_front():
    t = [Trial([], "", fid, 1, 1.0, ips) for fid, ips in ((1.0, 1.0), (2.0, 3.0), (2.5, 2.0), (0.5, 0.5))]
    front = mark_pareto(t)
    assert [x.fid for x in front] == [2.0, 1.0, 0.5] and not t[2].pareto


class SleepyModel:
    """A stand-in network whose evaluation takes a known time per resolution (and returns x)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, x, sigma, class_labels=None, cond=None, sigma_cond=None):
        import time
        time.sleep(self.seconds[x.shape[-1]])
        return x


def test_cost_model_predicts_the_sampling_time_of_plans(tiny):
    """Calibrated on one short plan, the cost model predicts other plans' measured times: the
    network's latency per resolution and the time per step outside it are both measured."""
    from types import SimpleNamespace

    from lowdiff.eval.bench import BenchOptions, time_sampling
    from lowdiff.eval.tune import measure_costs
    preset = tiny()
    fake = SleepyModel({8: 0.004, 16: 0.008, 32: 0.02})
    pipe = SimpleNamespace(fast=fake, preset=preset, device=torch.device("cpu"))
    costs = measure_costs(pipe, TuneOptions(budget_nfe=9, batch=4, screen_num=4))
    assert costs.latency[32] == pytest.approx(0.02, rel=0.3) and costs.latency[8] < costs.latency[16] < costs.latency[32]
    assert costs.step_overhead >= 0
    for plan in (preset.stages, preset.stages.with_solver("dpmpp2m").replace(2, steps=12)):
        measured = min(time_sampling(fake, preset, BenchOptions(batch=4), stages=plan)[0] for _ in range(2))
        predicted = costs.latency_per_image(plan) * 4
        assert predicted == pytest.approx(measured, rel=0.25), (predicted, measured)


def test_few_step_starts_fit_the_budget_and_use_one_evaluation_solvers(tiny):
    from lowdiff.eval.tune_space import few_step_plans
    stages = tiny().stages
    costs = CostModel({8: 0.1, 16: 0.35, 32: 1.0}, batch=1)
    opts = TuneOptions(budget_nfe=9, solvers=("heun", "dpmpp2m", "ipndm"))
    starts = few_step_plans(stages, costs, opts)
    assert {p[0].solver for _, p in starts} == {"dpmpp2m", "ipndm"}
    assert all(costs.effective_nfe(p) <= 9 and {s.solver for s in p} == {p[0].solver} for _, p in starts)
    nfe = [p.nfe_per_stage for _, p in starts if p[0].solver == "dpmpp2m"]
    assert {8: 6, 16: 4, 32: 7} in nfe and {8: 2, 16: 2, 32: 8} in nfe      # the budget buys final-stage steps
    with pytest.raises(ConfigError, match=r"smaller than the cheapest plan \(one evaluation per stage: effective NFE"):
        fit_budget(stages, costs, TuneOptions(budget_nfe=1))


def test_warm_start_moves_are_valid_plans(tiny):
    preset = tiny()
    plan = preset.stages.with_solver("dpmpp2m").replace(1, nfe=6)      # 16x16 hands over at sigma 0.01
    coords = dict(coordinates(plan, ("dpmpp2m",), warm_start=True))
    assert "32:start" in coords and "16:start" in coords and "8:start" not in coords
    moves = coords["32:start"](plan)
    assert moves and all(p[2].start == "upsampled" for _, p in moves)
    valid = []
    for _, p in moves:
        try:
            preset.check_plan(p)
            valid.append(p)
        except ConfigError:
            pass
    assert {p[2].sigma_max for p in valid} >= {1.0, 2.0, 3.0, 5.0}
    back = coords["32:start"](valid[0])
    assert back[0][1][2].start == "noise" and back[0][1][2].sigma_max == plan[2].sigma_max


def test_start_plans_are_fitted_to_the_budget_and_named(tiny):
    """`--start PLAN`: a plan tuned at a larger budget becomes a start of the search, fitted to
    this budget the same ways as the model's plan, and named after its file."""
    from lowdiff.eval.tune import Tuner
    preset = tiny()
    given = preset.stages.with_solver("dpmpp2m").replace(0, nfe=2)     # NFE 2 / 3 / 4
    tuner = object.__new__(Tuner)                                      # the starts need no model or FIDs
    tuner.pipe = type("Pipe", (), {"preset": preset})()
    tuner.costs, tuner.opts = CostModel({8: 0.1, 16: 0.3, 32: 1.0}, batch=1), TuneOptions(budget_nfe=4)
    tuner.start_plans = [("b9.json", given)]
    starts = [(name, plan) for name, plan in tuner.starts() if name.startswith("b9.json")]
    assert starts and all(tuner.costs.effective_nfe(p) <= 4 for _, p in starts)
    assert all(s.solver == "dpmpp2m" for _, p in starts for s in p)            # the given plan's solvers kept
    assert "b9.json fitted, costliest stage first" in dict(starts)
    first = [name for name, _ in tuner.starts()][:len(starts)]
    assert first == [name for name, _ in starts]      # screened before the model's and the few-step plans


def test_tune_rejects_a_start_plan_for_other_resolutions(fixtures, capsys):
    d = fixtures                                                       # the model's stages are 16, 32
    (d / "other.json").write_text(json.dumps({"stages": [{"resolution": 8, "steps": 4, "nfe": 2},
                                                         {"resolution": 32, "steps": 4}]}))
    code = main(["tune", "--checkpoint", str(d / "model"), "--ref", str(d / "ref.npz"), "--classifier", str(d / "clf"),
                 "--budget-nfe", "12", "--start", str(d / "other.json"), "--out", str(d / "plan.json"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "start plan other.json" in err and not (d / "plan.json").exists()
    code = main(["tune", "--checkpoint", str(d / "model"), "--ref", str(d / "ref.npz"), "--classifier", str(d / "clf"),
                 "--budget-nfe", "12", "--start", str(d / "missing.json"), "--out", str(d / "plan.json")])
    err = capsys.readouterr().err
    assert code == 2 and "--start" in err and "no such plan file" in err


def test_a_solver_registered_once_reaches_the_help_the_tuner_and_its_few_step_starts(tiny, capsys, monkeypatch):
    """SOLVERS is the one list: a solver added there appears in `lowdiff sample --help`, in `lowdiff tune
    --help`'s --solvers, and (one evaluation per step) among the tuner's few-step starts."""
    import dataclasses

    from helpers import run
    from lowdiff.diffusion import solvers
    from lowdiff.eval.tune_space import few_step_plans
    dummy = dataclasses.replace(solvers.SOLVERS["euler"], name="dummysolver", description="a test's own solver")
    monkeypatch.setitem(solvers.SOLVERS, dummy.name, dummy)
    for command in ("sample", "tune"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "dummysolver" in " ".join(out.split()), command
    costs = CostModel({8: 0.1, 16: 0.35, 32: 1.0}, batch=1)
    starts = few_step_plans(tiny().stages, costs, TuneOptions(budget_nfe=9, solvers=("heun", "dummysolver")))
    assert starts and {p[0].solver for _, p in starts} == {"dummysolver"}


# --- guidance, flow solvers and warm starts on the flow ----------------------------------------------------------

def _moves(coords, name, plan):
    return dict(coords)[name](plan)


def test_guidance_is_searched_for_conditional_models_only():
    """By default for a class-conditional model trained with label dropout (or whose plan guides); never for
    an unconditional one, and asked for there it is a one-line error naming the option."""
    from lowdiff.eval.tune_space import guidance_searched
    assert guidance_searched(tiny_dit_preset(), TuneOptions())                      # label dropout 0.1
    assert not guidance_searched(tiny_dit_preset(), TuneOptions(guidance=False))
    cond = tiny_preset(label_dim=10)                                                # no label dropout
    assert not guidance_searched(cond, TuneOptions()) and guidance_searched(cond, TuneOptions(guidance=True))
    cond.stages = cond.stages.replace(2, cfg_scale=1.5)
    assert guidance_searched(cond, TuneOptions())
    assert not guidance_searched(tiny_preset(), TuneOptions())
    with pytest.raises(ConfigError, match="--tune-guidance: tiny-test is unconditional"):
        guidance_searched(tiny_preset(), TuneOptions(guidance=True))
    names = [n for n, _ in coordinates(tiny_preset().stages, ("heun",), guidance=False)]
    assert not any("cfg" in n for n in names)


def test_guidance_moves_scale_and_interval_and_stay_valid():
    preset = tiny_dit_preset()
    plan = preset.stages
    coords = coordinates(plan, ("euler",), precond=preset.precond, guidance=True)
    names = [n for n, _ in coords]
    assert {"4:cfg_scale", "8:cfg_scale", "4:cfg_interval", "8:cfg_interval"} <= set(names)
    up = _moves(coords, "8:cfg_scale", plan)                                        # from w = 1: only up
    assert sorted(p[1].cfg_scale for _, p in up) == [1.25, 1.5, 2.0]
    assert _moves(coords, "8:cfg_interval", plan) == []                              # unguided: nothing to move
    guided = plan.replace(1, cfg_scale=2.0)
    scales = sorted(p[1].cfg_scale for _, p in _moves(coords, "8:cfg_scale", guided))
    assert scales == [1.0, 1.333, 1.75, 2.25, 3.0] and min(scales) >= 1              # small, large, and unguided
    intervals = [p[1].cfg_sigma_max for _, p in _moves(coords, "8:cfg_interval", guided)]
    assert intervals == [0.9, 0.75, 0.6]                                             # the flow's, less inf (current)
    for _, p in _moves(coords, "8:cfg_scale", guided) + _moves(coords, "8:cfg_interval", guided):
        preset.check_plan(p)


def test_a_guided_evaluation_costs_two_in_the_budget():
    """Guidance runs a doubled batch in its interval: the cost model counts those evaluations twice, and
    the guidance moves are fitted to the budget (fewer steps) or dropped when it cannot pay for them."""
    preset = tiny_dit_preset()
    plan = preset.stages                                                            # NFE 3 / 6, Euler
    costs = CostModel({4: 0.5, 8: 1.0}, batch=1)
    guided = plan.replace(1, cfg_scale=2.0)
    assert guided.guided_nfe(1) == 6 and guided.nfe_per_stage == plan.nfe_per_stage
    interval = guided.replace(1, cfg_sigma_max=0.6)
    assert 0 < interval.guided_nfe(1) < 6
    assert costs.effective_nfe(guided) == costs.effective_nfe(plan) + 6
    assert costs.latency_per_image(guided) == pytest.approx(costs.latency_per_image(plan) + 6)
    assert costs.effective_nfe(plan) < costs.effective_nfe(interval) < costs.effective_nfe(guided)
    opts = TuneOptions(budget_nfe=costs.effective_nfe(plan))                       # no room for guidance as it is
    fit = lambda p: fit_budget(p, costs, opts)                                     # noqa: E731
    coords = coordinates(plan, ("euler",), precond=preset.precond, guidance=True, fit=fit)
    moves = _moves(coords, "8:cfg_scale", plan)
    assert moves and all(costs.effective_nfe(p) <= opts.budget_nfe for _, p in moves)
    assert all(p[1].cfg_scale > 1 and p[1].steps < plan[1].steps and "fitted to the budget" in m for m, p in moves)
    tight = TuneOptions(budget_nfe=2)                                               # one evaluation per stage
    coords = coordinates(plan, ("euler",), precond=preset.precond, guidance=True,
                         fit=lambda p: fit_budget(p, costs, tight))
    assert _moves(coords, "8:cfg_scale", plan) == []                                # guidance cannot be paid for
    assert fit_budget(guided, costs, tight)[1].cfg_scale == 1                       # a fitted start drops it


def test_calibration_is_unguided():
    from lowdiff.eval.tune_space import calibration_plan
    plan = tiny_dit_preset().stages.replace(1, cfg_scale=3.0)
    assert all(s.cfg_scale == 1 for s in calibration_plan(plan))


def test_solvers_valid_on_the_flow_ode_are_listed_and_only_they_are_searched(capsys):
    from helpers import run
    from lowdiff.diffusion.solvers import SOLVERS, flow_solvers, flow_solvers_text
    from lowdiff.eval.tune_space import searched_solvers
    assert set(flow_solvers()) == set(SOLVERS) - {"consistency"}
    preset = tiny_dit_preset()
    coords = coordinates(preset.stages, tuple(SOLVERS), precond=preset.precond)
    offered = {p[1].solver for _, p in _moves(coords, "8:solver", preset.stages)}
    assert offered == set(flow_solvers()) - {"euler"}                                # the plan's own is euler
    with pytest.raises(ConfigError, match="--solvers consistency: not valid on the flow ODE"):
        searched_solvers(("euler", "consistency"), preset.precond)
    assert searched_solvers(tuple(SOLVERS), tiny_preset().precond) == tuple(SOLVERS)  # EDM: checked elsewhere
    with pytest.raises(ConfigError, match="valid on the flow ODE"):
        preset.check_plan(preset.stages.replace(1, solver="consistency"))
    for command in ("tune", "sample"):
        _, out, _ = run(capsys, command, "--help")
        assert flow_solvers_text() in " ".join(out.split()), command


def test_flow_warm_start_moves_are_valid_and_sample():
    """On the flow (sigma in [0, 1], 1 = pure noise) a warm start begins between the noise level the stage
    below hands over and 1, and its sigma_max moves once warm; the plans validate and sample."""
    from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
    preset = tiny_dit_preset()
    plan = preset.stages
    below = plan.truncation_sigma(0)
    coords = coordinates(plan, ("euler",), warm_start=True, precond=preset.precond)
    names = [n for n, _ in coords]
    assert "8:start" in names and "4:start" not in names and "8:sigma_max" in names
    warm = _moves(coords, "8:start", plan)
    assert warm and all(below < p[1].sigma_max < 1 and p[1].start == "upsampled" for _, p in warm)
    for _, p in warm:
        preset.check_plan(p)
    assert _moves(coords, "8:sigma_max", plan) == []                                 # from noise it starts at 1
    start = warm[0][1]
    moved = _moves(coords, "8:sigma_max", start)
    assert moved and all(below < p[1].sigma_max < 1 for _, p in moved)
    back = _moves(coords, "8:start", start)
    assert back[0][1][1].start == "noise" and back[0][1][1].sigma_max == 1
    preset.check_plan(back[0][1])
    torch.manual_seed(0)
    model = Denoiser.from_preset(preset).eval()
    out = sample_cascade(model, start, PerImageGenerator([0, 1]), channels=4, class_labels=torch.eye(10)[[0, 1]],
                         precond=preset.precond)
    assert out.stages[1].sigma_start == pytest.approx(start[1].sigma_max) and torch.isfinite(out.images).all()
