"""Named plans shipped with a model directory (plans.json): the default rule, `--plan NAME|FILE`,
`lowdiff info MODEL`, and the first-hour defaults (device, progress in images, warnings)."""
import dataclasses
import json
import shutil
import warnings

import pytest
import torch

import lowdiff
from lowdiff import bundled
from lowdiff.checks import default_device
from lowdiff.cli import build_parser, main
from lowdiff.errors import ConfigError
from lowdiff.plans import CONFIG_PLAN, Figures, ModelPlans, NamedPlan
from lowdiff.progress import EvaluationTicks, image_bar

from helpers import run

MODEL = "bundled:fashion-lowdiff-cond"


def measured(name, fid, speed, stages):
    return NamedPlan(name, stages, figures=Figures(fid=fid, samples=2000, images_per_s=speed, device="cpu"))


def test_the_default_is_the_fastest_plan_within_the_fid_noise_of_the_best():
    stages = lowdiff.load(MODEL, device="cpu").preset.stages
    plans = ModelPlans({CONFIG_PLAN: NamedPlan(CONFIG_PLAN, stages)}, fid_noise=0.2)
    assert plans.default().name == CONFIG_PLAN                        # nothing measured: config.json's plan
    plans.add(measured("best", 1.5, 10, stages))
    plans.add(measured("near", 1.69, 20, stages))
    plans.add(measured("fastest", 1.71, 40, stages))                  # 0.21 above the best: outside the noise
    assert plans.default().name == "near"
    plans.fid_noise = 0.0
    assert plans.default().name == "best"


def test_plans_round_trip_through_a_model_directory(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(bundled.resolve(MODEL), d)
    plans = ModelPlans.read(d)
    fast = plans.get("fast")
    plans.add(NamedPlan("mine", fast.stages, figures=dataclasses.replace(fast.figures, fid=0.5, images_per_s=100.0)))
    plans.add(measured("gpu", 0.1, 5000.0, fast.stages))            # measured another way: not compared
    plans.write(d)
    again = ModelPlans.read(d)
    assert again.default().name == "mine" and again.get("mine").stages == fast.stages
    assert again.get("gpu") not in again.comparable()
    assert again.fid_noise == plans.fid_noise and list(again.plans)[:2] == [CONFIG_PLAN, "paper"]
    with pytest.raises(ConfigError, match="'config' names the plan in config.json"):
        plans.add(NamedPlan(CONFIG_PLAN, plans.get("fast").stages))


@pytest.mark.parametrize("content, message", [
    ("[]", "a JSON object with 'plans'"),
    ('{"plans": []}', "'plans' must be an object"),
    ('{"plans": {"x": {}}}', "plan 'x': needs a 'stages' list"),
    ('{"plans": {"x": {"stages": [], "speed": 1}}}', "unknown keys ['speed']"),
    ('{"fid_noise": -1, "plans": {}}', "fid_noise must be a finite number >= 0"),
    ("[" * 100_000, "JSON nested deeper than"),
])
def test_a_bad_plans_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    d = tmp_path / "model"
    shutil.copytree(bundled.resolve(MODEL), d)
    (d / "plans.json").write_text(content)
    code, _, err = run(capsys, "sample", "--checkpoint", d, "--num", "10", "--out", tmp_path / "g.png")
    assert code == 2 and message in err and "plans.json" in err and len(err.strip().splitlines()) == 1, err


def test_figures_must_be_finite_and_positive():
    with pytest.raises(ConfigError, match="finite"):
        Figures(fid=float("nan"), samples=10, images_per_s=1.0, device="cpu")
    with pytest.raises(ConfigError, match="img/s > 0"):
        Figures(fid=1.0, samples=10, images_per_s=0.0, device="cpu")


@pytest.mark.usefixtures("one_thread")
def test_sample_says_which_plan_and_takes_a_name_or_a_file(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--num", "10", "--out", tmp_path / "a.png", "--no-progress")
    assert code == 0 and "plan: fast (NFE 3/2/3; FID 1.66 on 2,000 samples" in err, err
    pipe = lowdiff.load(MODEL, device="cpu")
    pipe.plans.get("balanced").stages.save(tmp_path / "p.json")
    code, _, err = run(capsys, "sample", "--plan", tmp_path / "p.json", "--num", "10", "--out", tmp_path / "b.png",
                       "--no-progress")
    assert code == 0 and f"plan: {tmp_path / 'p.json'} (NFE 4/2/4; not measured)" in err, err
    code, _, err = run(capsys, "sample", "--plan", "balanced", "--solver", "heun", "--num", "10",
                       "--out", tmp_path / "c.png", "--no-progress")
    assert code == 0 and "plan: balanced with --solver heun" in err, err
    code, _, err = run(capsys, "sample", "--plan", "quick", "--num", "10", "--out", tmp_path / "d.png")
    assert code == 2 and "--plan quick: neither one of this model's plans (config, paper, best" in err


def test_python_calls_take_a_plan_name(tmp_path):
    pipe = lowdiff.load(device="cpu")
    assert pipe.default_plan.name == "fast"
    assert pipe(seeds=[0], stages="paper").nfe == pipe.plans.get("paper").stages.nfe_per_stage
    with pytest.raises(ConfigError, match="no plan named 'quick'"):
        pipe(seeds=[0], stages="quick")


def test_info_of_a_model_lists_its_plans_with_their_figures(capsys):
    code, out, _ = run(capsys, "info", MODEL)
    assert code == 0
    rows = {line.split()[1] if line.startswith("  *") else line.split()[0]: line
            for line in out.splitlines() if line.startswith(("    ", "  *"))}
    shipped = f"{ModelPlans.read(MODEL).get('fast').figures.images_per_s:.1f}"       # the figure plans.json records
    assert rows["fast"].startswith("  *") and "3/2/3" in rows["fast"] and shipped in rows["fast"]
    assert "3.05" in rows["paper"] and "2,000" in rows["paper"]
    code, out, _ = run(capsys, "info", MODEL, "--json")
    info = json.loads(out)
    assert [p["name"] for p in info["plans"] if p["default"]] == ["fast"] and info["fid_noise"] > 0


def test_info_calls_only_cascades_unified_and_prints_the_papers_figures_as_a_table(capsys):
    _, out, _ = run(capsys, "info", "edm-fashion-tiny-cond", "--json")
    assert "unified" not in json.loads(out)
    _, out, _ = run(capsys, "info", "edm-fashion-tiny-cond")
    assert "single-resolution network" in out
    _, out, _ = run(capsys, "info", "cifar10-uncond")
    head, values = [line for line in out.splitlines() if "paper reports" in line or "55.77 M" in line]
    assert head.split()[2:4] == ["parameters", "FID"] and values.split()[:3] == ["55.77", "M", "2.11"]
    assert "{" not in out


def test_the_device_is_cuda_when_a_gpu_is_visible_and_each_rank_takes_its_own(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_device() == "cuda:3"
    assert build_parser().parse_args(["sample", "--out", "g.png"]).device == "auto"


def test_commands_resolve_the_auto_device_before_the_work(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr("lowdiff.cli.sample.run", lambda args: seen.setdefault("device", args.device) and None)
    main(["sample", "--out", str(tmp_path / "g.png")])
    assert seen["device"] == "cuda"
    seen.clear()
    main(["sample", "--out", str(tmp_path / "g.png"), "--device", "cpu"])
    assert seen["device"] == "cpu"


def test_progress_counts_whole_images_inside_a_batch_and_never_passes_its_total():
    bar = image_bar(8, "sample")
    ticks = EvaluationTicks(bar, images=8, evaluations=3)
    ticks.update()
    assert bar.n == 2                                # 8 * 1 // 3
    ticks.update()
    ticks.done()                                     # a stage that stopped early: the batch still counts 8
    assert bar.n == 8
    bar = image_bar(1000, "fid")
    for images, evaluations in [(7, 3), (250, 13), (1, 48), (742, 5)]:
        ticks = EvaluationTicks(bar, images, evaluations)
        for _ in range(evaluations + 2):             # more ticks than planned (a guided stage) stay capped
            ticks.update()
            assert bar.n <= bar.total and isinstance(bar.n, int)
        ticks.done()
    assert bar.n == 1000


@pytest.mark.usefixtures("one_thread")
def test_the_sampling_bar_shows_images_and_a_rate(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--num", "10", "--out", tmp_path / "a.png")
    assert code == 0 and "10/10 img" in err and "img/s" in err


def test_only_lowdiffs_own_warnings_carry_its_prefix():
    from lowdiff.cli import _format_warning
    ours = _format_warning("sigma range", UserWarning, bundled.__file__, 1)
    theirs = _format_warning("grad strides", UserWarning, torch.__file__, 7)
    assert ours == "lowdiff: warning: sigma range\n"
    assert theirs.startswith(torch.__file__) and "UserWarning: grad strides" in theirs and "lowdiff:" not in theirs


def test_plans_that_do_not_fit_the_model_or_take_configs_name_are_refused(tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(bundled.resolve(MODEL), d)
    edm = json.loads((bundled.resolve("bundled:fashion-edm-cond") / "plans.json").read_text())
    (d / "plans.json").write_text(json.dumps(edm))                 # another model's plans: one stage at 32x32
    code, _, err = run(capsys, "sample", "--checkpoint", d, "--num", "10", "--out", tmp_path / "g.png")
    assert code == 2 and "plans.json: plan 'paper' does not fit this model" in err, err
    ours = json.loads((bundled.resolve(MODEL) / "plans.json").read_text())
    ours["plans"]["config"] = ours["plans"]["fast"]
    (d / "plans.json").write_text(json.dumps(ours))
    code, _, err = run(capsys, "sample", "--checkpoint", d, "--num", "10", "--out", tmp_path / "g.png")
    assert code == 2 and "'config' is reserved for config.json's plan" in err, err


def test_plans_measured_on_other_weights_lose_their_figures(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(bundled.resolve(MODEL), d)
    plans = json.loads((d / "plans.json").read_text())
    plans["model_sha256"] = "0" * 64                                  # the model was trained further since
    (d / "plans.json").write_text(json.dumps(plans))
    with pytest.warns(UserWarning, match="measured on other weights"):
        again = ModelPlans.read(d)
    assert again.default().name == CONFIG_PLAN and "fast" in again.plans and not again.measured()


def test_load_resolves_the_auto_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lowdiff.load(device="auto").device == torch.device("cpu")


def test_more_processes_than_gpus_put_every_process_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_device() == "cpu"


def test_only_a_lost_connection_reads_as_another_process_ending():
    from lowdiff.distributed import peer_loss_as_error
    from lowdiff.errors import LowdiffError
    with pytest.raises(LowdiffError, match=r"process 1 of 2: another process .* Connection closed by peer"):
        with peer_loss_as_error(1, 2):
            raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")
    with pytest.raises(RuntimeError, match="NCCL error: invalid usage"):       # this process's own fault
        with peer_loss_as_error(1, 2):
            raise RuntimeError("NCCL error: invalid usage")


def test_a_model_load_reads_config_json_once_and_checks_each_plan_once(monkeypatch):
    """Pipeline.from_pretrained and `lowdiff info MODEL` read config.json once; a plan the pipeline
    has checked (its own, or one returned by `pipe.plan`) is not checked again when sampled."""
    import lowdiff
    from lowdiff import config, info, storage
    reads, checks = [], []
    read_config, check_plan = storage.read_config, config.Preset.check_plan
    monkeypatch.setattr(storage, "read_config", lambda d: reads.append(d) or read_config(d))
    monkeypatch.setattr(info, "read_config", storage.read_config)
    monkeypatch.setattr(config.Preset, "check_plan", lambda self, plan: checks.append(plan) or check_plan(self, plan))
    pipe = lowdiff.load("bundled:fashion-lowdiff-cond")
    assert len(reads) == 1
    checks.clear()
    plan = pipe.plan(pipe.preset.stages.with_solver("euler"))
    pipe(2, seed=0, stages=plan)
    pipe(2, seed=0)                                                      # the model's default plan
    assert len(checks) == 1
    reads.clear()
    info.describe_model("bundled:fashion-lowdiff-cond")
    assert len(reads) == 1
