"""The `lowdiff` command: presets, info, train -> sample, bench, and clear errors."""
import json
import re

import pytest

from helpers import run


def test_presets_lists_paper_and_cpu_presets(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    for name in ("cifar10-uncond", "edm-cifar10-uncond", "ffhq64", "cdm-cifar10-uncond-2stage", "edm-fashion-tiny"):
        assert name in out


@pytest.mark.parametrize("name,params", [("edm-cifar10-uncond", 55_733_891), ("edm-cifar10-cond", 55_735_299),
                                         ("edm-ffhq64", 61_805_571)])
def test_info_json_parameter_counts(capsys, name, params):
    code, out, _ = run(capsys, "info", name, "--json")
    info = json.loads(out)
    assert code == 0 and info["parameters"] == params


def test_info_text_shows_plan_and_baseline(capsys):
    code, out, _ = run(capsys, "info", "cifar10-uncond")
    assert code == 0
    assert "55,790,345" in out and "edm-cifar10-uncond: 55,733,891" in out and "effective NFE 22" in out


def test_unknown_preset_is_a_clear_error(capsys):
    code, _, err = run(capsys, "info", "cifar-10")
    assert code == 2 and "unknown preset" in err and "lowdiff presets" in err


@pytest.mark.slow
def test_train_then_sample_then_resume(tmp_path, capsys):
    spec = tmp_path / "preset.json"
    from conftest import tiny_preset
    spec.write_text(tiny_preset(label_dim=10).to_json())
    out = tmp_path / "run"
    args = ["train", "--preset", str(spec), "--data", "synthetic:32", "--out", str(out), "--no-progress"]
    assert run(capsys, *args, "--duration-kimg", "0.016")[0] == 0
    assert run(capsys, *args, "--duration-kimg", "0.032")[0] == 0           # resumes from step 2
    steps = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    code, _, err = run(capsys, "sample", "--checkpoint", str(out), "--num", "20", "--out", str(tmp_path / "g.png"),
                       "--stage", "16:nfe=2", "--no-progress")
    assert code == 0 and (tmp_path / "g.png").is_file() and "{8: 3, 16: 2, 32: 7}" in err
    code, _, _ = run(capsys, "sample", "--checkpoint", str(out), "--num", "3", "--out", str(tmp_path / "pngs"),
                     "--random-class", "--no-progress")
    assert code == 0 and sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [
        "000000.png", "000001.png", "000002.png", "labels.csv"]


def test_sample_errors(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert code == 2 and "config.json is missing" in err


def test_train_rejects_missing_data(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--preset", "edm-fashion-tiny", "--data", str(tmp_path / "nope"),
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "nope" in err


@pytest.mark.slow
def test_bench_json_reports_ratio(capsys, tmp_path):
    from conftest import tiny_preset
    import lowdiff.presets as config
    p = tiny_preset()
    base = tiny_preset(stages=(32,))
    base.name, p.baseline = "tiny-base", "tiny-base"
    config.PRESETS["tiny-base"] = base
    spec = tmp_path / "p.json"
    spec.write_text(p.to_json())
    try:
        code, out, _ = run(capsys, "bench", "--preset", str(spec), "--batch", "2", "--repeats", "1", "--json")
    finally:
        del config.PRESETS["tiny-base"]
    report = json.loads(out)
    assert code == 0 and report["throughput_ratio"] > 0
    assert report["lowdiff"]["nfe"] == {"8": 3, "16": 3, "32": 7} or report["lowdiff"]["nfe"] == {8: 3, 16: 3, 32: 7}


def test_dataset_info_and_convert(tmp_path, capsys):
    code, out, _ = run(capsys, "dataset", "convert", "synthetic:12:16", "--out", str(tmp_path / "d.zip"))
    assert code == 0 and json.loads(out)["images"] == 12
    code, out, _ = run(capsys, "dataset", "info", str(tmp_path / "d.zip"))
    info = json.loads(out)
    assert code == 0 and (info["images"], info["resolution"], info["num_classes"]) == (12, 16, 10)


@pytest.mark.slow
def test_sample_without_checkpoint_uses_the_bundled_model(tmp_path, capsys):
    from PIL import Image
    from lowdiff.pipeline import load
    pipe = load()                                                        # offline, no arguments
    assert pipe.preset.name == "lowdiff-fashion-tiny-cond" and len(pipe.preset.class_names) == 10
    out = tmp_path / "grid.png"
    code, _, err = run(capsys, "sample", "--num", "10", "--out", str(out), "--no-progress")
    assert code == 0 and "wrote 10 images" in err and str(pipe.default_plan.stages.nfe_per_stage) in err
    assert "plan: fast (NFE 3/2/3;" in err
    width, height = Image.open(out).size
    assert height > 10 * 32 and width > 32                               # ten labelled rows of garments


@pytest.mark.slow
def test_labelled_grid_says_when_it_rounds_num(tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--num", "12", "--out", str(tmp_path / "g.png"), "--no-progress",
                       "--stage", "32:steps=2")
    assert code == 0 and "--num 12 -> 10: 1 per class" in err and "wrote 10 images" in err


def test_every_command_lists_the_recorded_options():
    """`lowdiff --help` and every `lowdiff COMMAND --help` keep their options (tests/data/cli_options.json
    records them; additions are recorded there on purpose)."""
    import argparse
    from pathlib import Path

    from lowdiff.cli import build_parser

    def walk(p, prefix=""):
        opts = sorted(o for a in p._actions for o in a.option_strings)
        opts += sorted(f"<{a.dest}>" for a in p._actions
                       if not a.option_strings and not isinstance(a, argparse._SubParsersAction))
        out = {prefix or "lowdiff": opts}
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    out.update(walk(sub, f"{prefix} {name}".strip()))
        return out

    recorded = json.loads((Path(__file__).parent / "data" / "cli_options.json").read_text())
    assert walk(build_parser()) == recorded


def test_sample_help_lists_every_bundled_model_and_train_help_every_dataset_form(capsys):
    """The lists in the help are read from their owners: bundled.models() and data.SPEC_FORMS."""
    from helpers import run

    from lowdiff import bundled
    from lowdiff.data import SPEC_FORMS
    code, out, _ = run(capsys, "sample", "--help")
    text = " ".join(re.sub(r"-\n\s*", "-", out).split())                    # argparse wraps after hyphens
    assert code == 0 and len(bundled.models()) >= 6 and all(name in text for name in bundled.models())
    code, out, _ = run(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0 and all(" ".join(form.split()) in text for form in SPEC_FORMS)
