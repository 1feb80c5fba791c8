"""The stage plan (lowdiff/diffusion/plan.py): edits, solver switches, overrides, plan files,
NFE and truncation bookkeeping, validation."""
import json
import math

import pytest

from conftest import tiny_preset
from lowdiff.diffusion.plan import StageConfig, StagePlan, effective_nfe
from lowdiff.errors import ConfigError


def test_with_solver_keeps_nfe_and_round_trips(tiny):
    stages = tiny().stages
    back = stages.with_solver("dpmpp2m").with_solver("heun")
    assert [(s.steps, s.nfe, s.solver) for s in back] == [(s.steps, s.nfe, s.solver) for s in stages]
    with pytest.raises(ConfigError, match="dpmpp2m"):
        tiny().check_plan(stages.replace(0, solver="bogus"))


def test_with_guidance_per_stage_and_unguided_at_scale_one(tiny):
    """One scale guides every stage; a short list gives the stages above its last scale; scale 1 is
    unguided, without an interval."""
    stages = tiny().stages                                         # 8 -> 16 -> 32
    assert [(s.cfg_scale, s.cfg_sigma_max) for s in stages.with_guidance(2.5, 0.89)] == [(2.5, 0.89)] * 3
    mixed = stages.with_guidance([1, 2.0], 0.5)
    assert [(s.cfg_scale, s.cfg_sigma_max) for s in mixed] == [(1, math.inf), (2.0, 0.5), (2.0, 0.5)]
    assert [s.steps for s in mixed] == [s.steps for s in stages]


def test_stage_overrides_and_errors(tiny):
    stages = tiny().stages
    new = stages.override(["16:nfe=2,sigma_max=40", "32:solver=euler,steps=6"])
    assert (new[1].nfe, new[1].sigma_max, new[2].solver, new[2].steps) == (2, 40.0, "euler", 6)
    assert stages[1].nfe == 3                                  # the input is not modified
    with pytest.raises(ValueError, match="RES:key=value"):
        stages.override(["64:nfe=3"])
    with pytest.raises(ValueError, match="keys are"):
        stages.override(["16:bogus=1"])


def test_plan_files_round_trip_and_reject_junk(tiny, tmp_path):
    stages = tiny().stages
    stages.save(tmp_path / "p.json", preset="x")
    assert StagePlan.load(tmp_path / "p.json") == stages
    (tmp_path / "bad.json").write_text(json.dumps([{"resolution": 8, "bogus": 1}]))
    with pytest.raises(ConfigError, match="only the keys"):
        StagePlan.load(tmp_path / "bad.json")


def test_bad_warm_starts_are_one_line_errors():
    preset = tiny_preset()
    with pytest.raises(ConfigError, match="stage 8: start=upsampled needs a stage below"):
        preset.check_plan(preset.stages.replace(0, start="upsampled"))
    with pytest.raises(ConfigError, match=r"stage 32: a warm start at sigma_max 0.005 must lie above .* 16x16"):
        preset.check_plan(preset.stages.replace(2, start="upsampled", sigma_max=0.005, sigma_min=0.001))
    with pytest.raises(ConfigError, match="start 'hot', choose noise or upsampled"):
        preset.check_plan(preset.stages.override(["32:start=hot"]))
    plan = preset.stages.override(["32:start=upsampled,sigma_max=3,steps=3"])
    assert plan[2].start == "upsampled" and plan[2].sigma_max == 3 and plan[2].steps == 3


def test_nfe_and_truncation_bookkeeping(tiny):
    """Heun's truncated stages stop after `nfe` evaluations (an odd budget ends with one Euler step);
    the final stage runs its whole schedule to 0 (2N - 1 evaluations)."""
    plan = tiny().stages                                  # 8: 4 steps / 3 NFE, 16: 4 / 3, 32: 4 steps to 0
    assert plan.nfe_per_stage == {8: 3, 16: 3, 32: 7} and plan.total_nfe == 13
    assert [plan.is_final(i) for i in range(3)] == [False, False, True] and plan.budget(2) is None
    assert 0 < plan.truncation_sigma(1) < plan[1].sigma_max and plan.truncation_sigma(2) == 0
    assert plan.effective_nfe({8: 1, 16: 1, 32: 1}) == 13
    assert effective_nfe({8: 18, 16: 13, 32: 17}, {8: 0.1, 16: 0.35, 32: 1.0}) == math.ceil(17 + 13 * .35 + 1.8 - 1e-9)


def test_plans_are_immutable_and_json_round_trips_every_field(tmp_path):
    plan = StagePlan([StageConfig(16, steps=6, nfe=4, solver="ipndm"), StageConfig(32, steps=3, sigma_max=3.0,
                                                                                     start="upsampled")])
    edited = plan.replace(0, nfe=2)
    assert plan[0].nfe == 4 and edited[0].nfe == 2 and edited != plan
    plan.save(tmp_path / "p.json", preset="x")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["preset"] == "x" and data["stages"][1]["start"] == "upsampled"
    assert StagePlan.load(tmp_path / "p.json") == plan
    with pytest.raises(ConfigError, match="no such plan file"):
        StagePlan.load(tmp_path / "absent.json")


@pytest.mark.parametrize("change,message", [
    (dict(rho=float("nan")), "rho must be a finite number"),
    (dict(sigma_max=float("inf")), "sigma_max must be a finite number"),
    (dict(steps=10 ** 9), r"steps must be in \[1, 10,000\]"),
    (dict(S_noise=-1.0), "S_noise must be >= 0"),
    (dict(solver="rk4"), "solver 'rk4'"),
    (dict(nfe=99), "past the last step"),
])
def test_validation_names_the_stage_and_the_field(change, message):
    plan = tiny_preset().stages.replace(1, **change)
    with pytest.raises(ConfigError, match=message):
        plan.validate()


@pytest.mark.parametrize("change, message", [
    (dict(cfg_scale=float("nan")), "stage 16: cfg_scale must be a finite number, got nan"),
    (dict(cfg_scale=-1.0), "stage 16: cfg_scale must be >= 0"),
    (dict(cfg_sigma_max=float("nan")), "stage 16: cfg_sigma_max must be a number"),
    (dict(cfg_sigma_max=-0.5), r"stage 16: cfg_sigma_max -0.5 is outside the noise levels of the edm "
                               r"preconditioning \[0, 80\]"),
    (dict(cfg_sigma_max=100.0), r"cfg_sigma_max 100 is outside .* \[0, 80\]"),
])
def test_guidance_errors_name_the_field(change, message):
    plan = tiny_preset(label_dim=10).stages.replace(1, **change)
    with pytest.raises(ConfigError, match=message):
        plan.validate(conditional=True)


def test_the_guidance_interval_of_a_flow_stage_lies_in_0_1():
    from conftest import tiny_dit_preset
    preset = tiny_dit_preset()
    for v in (1.5, -0.1):
        with pytest.raises(ConfigError, match=rf"stage 8: cfg_sigma_max {v:g} is outside the noise levels of the flow "
                                              r"preconditioning \[0, 1\]"):
            preset.check_plan(preset.stages.replace(1, cfg_scale=2.0, cfg_sigma_max=v))
    for v in (0.0, 0.89, 1.0, float("inf")):                       # inf: guide at every level
        preset.check_plan(preset.stages.replace(1, cfg_scale=2.0, cfg_sigma_max=v))


@pytest.mark.parametrize("override, message", [
    ("32:cfg_scale=nan", "cfg_scale must be a finite number"),
    ("32:cfg_sigma_max=-1", "cfg_sigma_max -1 is outside"),
])
def test_bad_guidance_is_one_line_before_sampling(capsys, tmp_path, override, message):
    from helpers import run
    code, _, err = run(capsys, "sample", "--checkpoint", "bundled:fashion-lowdiff-cond", "--num", "2",
                       "--stage", override, "--out", tmp_path / "g.png", "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g.png").exists()
