"""Never silently wrong, never lose finished work (issue 18): FID identity, checks before the
work, corrupt states, one-line errors, interrupted runs, folder outputs, file hygiene."""
import json
import os
import signal
import subprocess
import sys
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import lowdiff.pipeline
from helpers import run
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.eval.classifier import ImageClassifier
from lowdiff.storage import save_pretrained


@pytest.fixture
def model(tiny, tmp_path):
    """A tiny class-conditional model directory (3 classes, random weights)."""
    torch.manual_seed(0)
    preset = tiny(label_dim=3)
    preset.class_names = ["circle", "square", "ring"]
    save_pretrained(tmp_path / "model", preset, Denoiser.from_preset(preset).state_dict())
    return tmp_path / "model"


@pytest.fixture
def ref(tmp_path, capsys):
    """Reference statistics of synthetic images in the bundled classifier's feature space."""
    code, _, err = run(capsys, "eval", "ref", "--data", "synthetic:64:32", "--out", tmp_path / "ref.npz",
                       "--no-progress")
    assert code == 0, err
    return tmp_path / "ref.npz"


def other_classifier(path):
    clf = ImageClassifier()
    path.mkdir()
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(path / "classifier.safetensors"))
    (path / "classifier.json").write_text(json.dumps({"arch": clf.arch()}))
    return path


def no_sampling(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("sampled before the check")
    monkeypatch.setattr(lowdiff.pipeline, "sample_cascade", fail)


# --- 1. FID identity ---------------------------------------------------------------------

def test_refs_record_the_extractor_and_a_mismatch_is_refused_before_sampling(model, ref, tmp_path, capsys,
                                                                             monkeypatch):
    with np.load(ref) as f:
        assert str(f["feature_space"]) == "classifier" and int(f["feature_dim"]) == 128
        assert len(str(f["extractor_sha256"])) == 64
    no_sampling(monkeypatch)
    code, _, err = run(capsys, "eval", "fid", "--checkpoint", model, "--ref", ref, "--classifier",
                       other_classifier(tmp_path / "clf"), "--num", "10", "--no-progress")
    assert code == 2 and "another feature extractor" in err and "Traceback" not in err
    np.savez(tmp_path / "ref64.npz", mu=np.zeros(64), sigma=np.eye(64))           # wrong dimension
    code, _, err = run(capsys, "eval", "fid", "--checkpoint", model, "--ref", tmp_path / "ref64.npz", "--num", "10")
    assert code == 2 and "feature_dim" in err


def test_fid_of_an_image_folder_and_between_two_stats_files(model, ref, tmp_path, capsys):
    assert run(capsys, "sample", "--checkpoint", model, "--num", "6", "--random-class", "--out", tmp_path / "imgs",
               "--no-progress")[0] == 0
    code, out, err = run(capsys, "eval", "fid", "--images", tmp_path / "imgs", "--ref", ref, "--no-progress")
    assert code == 0, err
    assert json.loads(out)["num"] == 6 and json.loads(out)["fid"] > 0
    code, out, _ = run(capsys, "eval", "fid", "--stats", ref, "--ref", ref)
    assert code == 0 and abs(json.loads(out)["fid"]) < 1e-4             # rank-deficient covariance: rounding
    code, _, err = run(capsys, "eval", "ref", "--data", "synthetic:64:32", "--out", tmp_path / "other.npz",
                       "--classifier", other_classifier(tmp_path / "clf2"), "--no-progress")
    code, _, err = run(capsys, "eval", "fid", "--stats", tmp_path / "other.npz", "--ref", ref)
    assert code == 2 and "another feature extractor" in err


# --- 2. checks before the work; finished batches kept ------------------------------------

@pytest.mark.parametrize("argv", [
    ["sample", "--num", "3", "--stage", "32:steps=1", "--out", "{new}/grid.png", "--no-progress"],
    ["eval", "ref", "--data", "synthetic:8:32", "--out", "{new}/ref.npz", "--no-progress"],
])
def test_outputs_in_missing_folders_are_written(argv, model, tmp_path, capsys):
    new = tmp_path / "not" / "yet"
    argv = [a.format(new=new) for a in argv] + (["--checkpoint", str(model)] if argv[0] == "sample" else [])
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert (new / Path(argv[argv.index("--out") + 1]).name).stat().st_size > 0


@pytest.mark.parametrize("argv", [
    ["sample", "--out", "{file}/grid.png"],
    ["eval", "ref", "--data", "synthetic:8:32", "--out", "{file}/ref.npz"],
    ["tune", "--ref", "{ref}", "--budget-nfe", "9", "--out", "{file}/plan.json"],
])
def test_unwritable_outputs_fail_before_any_work(argv, model, ref, tmp_path, capsys, monkeypatch):
    (tmp_path / "f").write_text("a file")
    no_sampling(monkeypatch)
    argv = [a.format(file=tmp_path / "f", ref=ref) for a in argv]
    if argv[0] in ("sample", "tune"):
        argv += ["--checkpoint", str(model)]
    start = time.time()
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--out" in err and "is a file" in err and time.time() - start < 20


def test_interrupted_folder_sampling_keeps_its_finished_batches(model, tmp_path, capsys, monkeypatch):
    real, calls = lowdiff.pipeline.sample_cascade, []

    def interrupt_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(lowdiff.pipeline, "sample_cascade", interrupt_second_batch)
    code, _, err = run(capsys, "sample", "--checkpoint", model, "--num", "6", "--batch", "3", "--out",
                       tmp_path / "out", "--no-progress")
    assert code == 130 and "the 3 images finished" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["000000.png", "000001.png", "000002.png"]


# --- 3. corrupt states never restart silently --------------------------------------------

def test_all_states_corrupt_is_refused_until_restart(tiny, tmp_path, capsys):
    spec = tmp_path / "preset.json"
    spec.write_text(tiny().to_json())
    out = tmp_path / "run"
    args = ["train", "--preset", spec, "--data", "synthetic:16", "--out", out, "--no-progress", "--duration-kimg",
            "0.032"]
    assert run(capsys, *args)[0] == 0
    model_bytes = (out / "model.safetensors").read_bytes()
    for state in (out / "checkpoints").glob("state-*.safetensors"):
        state.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        code, _, err = run(capsys, *args)
    assert code == 2 and "every training state" in err and "--restart" in err and "state-" in err
    assert (out / "model.safetensors").read_bytes() == model_bytes                     # nothing overwritten
    for f in (out / "checkpoints").iterdir():
        f.unlink()
    code, _, err = run(capsys, *args)                                                  # a model but no state
    assert code == 2 and "--restart" in err and (out / "model.safetensors").read_bytes() == model_bytes
    code, _, err = run(capsys, *args, "--restart")
    assert code == 0, err
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


# --- 4. one-line errors, exit 2, naming the option ---------------------------------------

BAD_INPUTS = [
    (["sample", "--num", "0"], "--num"),
    (["sample", "--num", "-4"], "--num"),
    (["sample", "--num", "2"], "--num 2"),                      # fewer than the 3 classes of a labelled grid
    (["sample", "--batch", "0"], "--batch"),
    (["sample", "--seeds", "9-3"], "--seeds"),
    (["sample", "--scale", "0"], "--scale"),
    (["sample", "--class", "7"], "--class"),
    (["sample", "--stage", "32:steps=abc"], "steps"),
    (["sample", "--stage", "64:nfe=3"], "RES:key=value"),
    (["sample", "--plan", "{tmp}"], "--plan"),
    (["sample", "--plan", "{nostages}"], "stages"),
    (["sample", "--plan", "{badvalue}"], "steps"),
    (["sample", "--solver", "rk4"], "--solver"),
    (["sample", "--checkpoint", "{wrongtype}"], "model_channels"),
    (["sample", "--checkpoint", "{wrongshape}"], "weights do not match"),
    (["sample", "--checkpoint", "{tmp}/absent"], "absent"),
    (["eval", "fid", "--num", "0", "--ref", "{tmp}/r.npz"], "--num"),
    (["eval", "fid", "--batch", "0", "--ref", "{tmp}/r.npz"], "--batch"),
    (["bench", "--preset", "lowdiff-fashion-tiny", "--repeats", "0"], "--repeats"),
    (["bench", "--preset", "lowdiff-fashion-tiny", "--batch", "-1"], "--batch"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--batch", "0"], "--batch"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-kimg", "0"], "--duration-kimg"),
    (["train", "--preset", "lowdiff-fashion-latent-tiny", "--out", "{tmp}/r"], "dataset encode"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-tflop", "nan"], "--duration-tflop"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--snapshot-kimg", "0"], "--snapshot-kimg"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--snapshot-kimg", "inf"], "--snapshot-kimg"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-tflop", "-1"], "--duration-tflop"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-tflop", "0.01"], "one batch"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-tflop", "1e30"], "--duration-tflop"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-tflop", "1", "--duration-kimg", "1"],
     "--duration-kimg"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--match-compute", "{tmp}"], "not a training run"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--match-compute", "{logonly}"],
     "not a training run"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--data", "synthetic:8", "--match-compute",
      "{otherdata}"], "that run trained on cifar10:train"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--data", "synthetic:8", "--match-compute",
      "{legacyrun}"], "a run of another dataset"),         # a log without the dataset's name: its network must fit
    (["train", "--preset", "lowdiff-fashion-tiny-cond", "--out", "{tmp}/r", "--init-from", "bundled:cifar-edm-cond"],
     "network in_channels: 3 there, 1"),
    (["train", "--preset", "lowdiff-fashion-tiny-cond", "--out", "{tmp}/r", "--init-from",
      "bundled:fashion-lowdiff-cond"], "cascade"),
    (["train", "--preset", "lowdiff-fashion-tiny-cond", "--out", "{tmp}/r", "--init-from", "bundled:fashion-latent-flow"],
     "family"),
    (["train", "--preset", "lowdiff-fashion-tiny-cond", "--out", "{tmp}/r", "--init-from", "{tmp}/absent"], "--init-from"),
    (["train", "--preset", "cdm-fashion-tiny-2stage", "--out", "{tmp}/r", "--init-from", "bundled:fashion-edm-cond"],
     "one network per stage"),
    (["train", "--preset", "lowdiff-fashion-tiny-cond-ct", "--out", "{tmp}/r", "--init-from", "bundled:fashion-edm-cond"],
     "consistency tuning"),
    (["sample", "--stage", "32:solver=consistency"], "not tuned for it"),
    (["tune", "--ref", "{tmp}/r.npz", "--out", "{tmp}/p.json", "--trials", "0"], "--trials"),
    (["tune", "--ref", "{tmp}/r.npz", "--out", "{tmp}/p.json", "--budget-nfe", "-2"], "--budget-nfe"),
    (["vae", "train", "--data", "synthetic", "--out", "{tmp}/v", "--kimg", "0"], "--kimg"),
    (["dataset", "info", "synthetic", "--pad-to", "0"], "--pad-to"),
    # round two, family 1: non-finite numbers never reach sampling, training or a metric
    (["sample", "--stage", "32:rho=nan"], "rho must be a finite number"),
    (["sample", "--stage", "8:sigma_max=inf"], "sigma_max must be a finite number"),
    (["sample", "--stage", "32:S_churn=-1"], "S_churn must be >= 0"),
    (["sample", "--plan", "{nanplan}"], "NaN is not a value"),
    (["tune", "--ref", "{tmp}/r.npz", "--out", "{tmp}/p.json", "--budget-nfe", "nan"], "--budget-nfe"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--duration-kimg", "inf"], "--duration-kimg"),
    (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--lr", "nan"], "--lr"),
    (["train", "--preset", "{nantrain}", "--data", "synthetic:8", "--out", "{tmp}/r"], "train lr"),
    (["eval", "fid", "--stats", "{nanstats}", "--ref", "{okstats}"], "NaN or inf"),
    (["eval", "fid", "--stats", "{okstats}", "--ref", "{npsd}"], "negative eigenvalues"),
    (["eval", "fid", "--stats", "{okstats}", "--ref", "{asym}"], "not symmetric"),
    # family 2: sizes are bounded before anything is allocated
    (["sample", "--stage", "32:steps=1000000000"], "steps must be in [1, 10,000]"),
    (["sample", "--checkpoint", "{hugeblocks}"], "num_blocks"),
    (["sample", "--checkpoint", "{hugechannels}"], "model_channels"),
    (["sample", "--batch", "100000000"], "--batch"),
    (["sample", "--seeds", "0-9999999999"], "too large"),
    (["eval", "fid", "--batch", "100000000", "--ref", "{tmp}/r.npz"], "--batch"),
    # family 3: outputs never mix
    (["sample", "--out", "{oldrun}"], "--overwrite"),
    (["sample", "--out", "{foreign}"], "other images"),
    # family 4: failing before the work
    (["eval", "fid", "--ref", "{wrongmu}", "--num", "4"], "features but its mean"),
    (["eval", "fid", "--ref", "{shortmu}", "--num", "4"], "need (D,) and (D, D)"),
    # family 5: our own words, no traceback
    (["eval", "fid", "--stats", "{truncated}", "--ref", "{okstats}"], "not a readable .npz"),
    (["eval", "fid", "--stats", "{garbage}", "--ref", "{okstats}"], "not a readable .npz"),
    # round three (issue 43), family 1: an FID only between statistics of the same kind of images
    (["eval", "fid", "--checkpoint", "{model}", "--ref", "{rgbref}", "--num", "4"],
     "measured 32x32 RGB images, these are 32x32 grayscale images"),
    (["eval", "fid", "--images", "{rgbfolder}", "--ref", "{grayref}"],
     "measured 32x32 grayscale images, these are 32x32 RGB"),
    (["eval", "fid", "--images", "{rgbfolder}", "--ref", "{oldgrayref}"], "a classifier of 1-channel images"),
    (["eval", "fid", "--stats", "{rgbref}", "--ref", "{grayref}"], "RGB images"),
    (["tune", "--checkpoint", "{model}", "--ref", "{rgbref}", "--budget-nfe", "9", "--out", "{tmp}/p.json"],
     "RGB images"),
    # family 2: model directories whose weights are wrong
    (["sample", "--checkpoint", "{nanweights}"], "tensor nets.unified.dec.16x16_block0.affine.weight holds NaN"),
    (["sample", "--checkpoint", "{intweights}"], "stored as torch.int32"),
    (["sample", "--checkpoint", "{flipped}"], "does not match the SHA-256"),
    # family 3: seeds name one image each, within the generator's range
    (["sample", "--seeds", "0-4,2-6", "--out", "{tmp}/o"], "seed 2 is listed twice"),
    (["sample", "--seeds", "3,3", "--out", "{tmp}/o"], "seed 3 is listed twice"),
    (["sample", "--seeds", "99999999999999999999"], "--seeds"),
    (["sample", "--seed", "99999999999999999999"], "--seed"),
    (["sample", "--seed", "9223372036854775807", "-n", "5"], "largest seed"),
    (["eval", "fid", "--seed", "9223372036854775808", "--ref", "{tmp}/r.npz"], "--seed"),
    # family 4: sample folders and their labels
    (["sample", "--out", "{subfolder}"], "other images"),
    (["eval", "fid", "--images", "{mislabelled}", "--ref", "{okstats}"], "labels.csv and the images disagree"),
    # family 5: labels that fit the model
    (["sample", "--checkpoint", "{twonames}"], "class_names lists 2 names"),
    (["sample", "--checkpoint", "{twelvenames}"], "class_names lists 12 names"),
    # family 6: finite numbers beyond what sampling can represent
    (["sample", "--stage", "32:sigma_max=1e308"], "can sample"),
    (["sample", "--stage", "32:rho=1e300"], "rho must be in"),
    (["sample", "--plan", "{bigsnoise}"], "S_noise must be in"),
    # family 7: malformed inputs that reach a library
    (["sample", "--plan", "{deepplan}"], "nested deeper"),
    (["eval", "fid", "--ref", "{npy}", "--num", "4"], "a single array (.npy)"),
    (["eval", "fid", "--stats", "{strmu}", "--ref", "{okstats}"], "array 'mu' holds"),
    (["sample", "--checkpoint", "{groupnorm}"], "model_channels"),
    (["sample", "--checkpoint", "bundled:fashion-latent-lowdiff", "--vae", "{model}"], "a lowdiff model directory"),
    (["sample", "--checkpoint", "bundled:fashion-latent-lowdiff", "--vae", "{garbage}"], "not a readable weight file"),
    (["vae", "train", "--data", "synthetic", "--out", "{tmp}/v", "--channels", "16,abc"], "--channels"),
    # family 8: input that would be ignored is refused
    (["sample", "--vae", "{model}"], "pixel-space model"),
    (["sample", "--plan", "{extrakey}"], "unknown key(s) note"),
    (["sample", "--seeds", "0-3", "-n", "4"], "drop -n/--num"),
    (["tune", "--checkpoint", "{model}", "--ref", "{tmp}/r.npz", "--budget-nfe", "9", "--out", "{tmp}/p.json",
      "-n", "10", "--screen-num", "20"], "--screen-num 20 is more than"),
    (["sample", "--checkpoint", "{model}/model.safetensors"], "is a file; give a model directory"),
]
if not torch.cuda.is_available():
    BAD_INPUTS += [(["sample", "--device", "cuda"], "--device"), (["bench", "--preset", "lowdiff-fashion-tiny",
                                                                   "--device", "cuda"], "--device"),
                   (["train", "--preset", "lowdiff-fashion-tiny", "--out", "{tmp}/r", "--device", "cuda"], "--device")]


def bad_files(model: Path, tmp: Path) -> dict[str, Path]:
    """Files for the bad-input table: plans, presets, model configs, statistics, sample folders."""
    paths = {}
    stages = json.loads((model / "config.json").read_text())["stages"]
    paths["nanplan"] = tmp / "nanplan.json"
    paths["nanplan"].write_text(json.dumps({"stages": [dict(s, rho=float("nan")) for s in stages]}))
    config = json.loads((model / "config.json").read_text())
    paths["nantrain"] = tmp / "nantrain.json"
    paths["nantrain"].write_text(json.dumps(dict(config, train=dict(config["train"], lr=float("inf")))))
    for name, key, value in (("hugeblocks", "num_blocks", 10 ** 6), ("hugechannels", "model_channels", 10 ** 7)):
        paths[name] = tmp / name
        paths[name].mkdir()
        (paths[name] / "config.json").write_text(json.dumps(dict(config, network=dict(config["network"],
                                                                                         **{key: value}))))
        (paths[name] / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    identity = {"feature_space": "classifier", "feature_dim": 128}
    for name, mu, sigma in (("okstats", np.zeros(128), np.eye(128)), ("nanstats", np.full(128, np.nan), np.eye(128)),
                            ("npsd", np.zeros(128), -np.eye(128)), ("asym", np.zeros(128), np.triu(np.ones((128, 128)))),
                            ("wrongmu", np.zeros(64), np.eye(64)), ("shortmu", np.zeros(127), np.eye(128))):
        paths[name] = tmp / f"{name}.npz"
        np.savez(paths[name], mu=mu, sigma=sigma, **(identity if name != "wrongmu" else dict(identity)))
    paths["otherdata"] = tmp / "otherdata"                 # a run of CIFAR-10 (as its log says)
    paths["otherdata"].mkdir()
    (paths["otherdata"] / "config.json").write_text(json.dumps(config))
    (paths["otherdata"] / "log.jsonl").write_text(json.dumps({"kimg": 1, "train_tflop": 10, "dataset": "cifar10:train"}))
    paths["legacyrun"] = tmp / "legacyrun"                 # 3 classes; its log predates train_tflop and dataset
    paths["legacyrun"].mkdir()
    (paths["legacyrun"] / "config.json").write_text(json.dumps(config))
    (paths["legacyrun"] / "log.jsonl").write_text(json.dumps({"kimg": 100}))
    paths["logonly"] = tmp / "logonly"                     # a log but no config.json
    paths["logonly"].mkdir()
    (paths["logonly"] / "log.jsonl").write_text(json.dumps({"kimg": 1}))
    bad_round_three(model, tmp, paths)
    paths["truncated"] = tmp / "truncated.npz"
    paths["truncated"].write_bytes(paths["okstats"].read_bytes()[:200])
    paths["garbage"] = tmp / "garbage.npz"
    paths["garbage"].write_bytes(b"not statistics at all " * 20)
    for name, files in (("oldrun", ["000000.png", "labels.csv"]), ("foreign", ["cat.jpg"])):
        paths[name] = tmp / name
        paths[name].mkdir()
        for f in files:
            (paths[name] / f).write_bytes(b"x")
    return paths


def bad_round_three(model: Path, tmp: Path, paths: dict[str, Path]) -> None:
    """Issue 43's files: references of other images, corrupt weights, folders, class names, plans, arrays."""
    from lowdiff.eval.classifier import load_classifier
    from lowdiff.eval.features import weights_sha256
    from lowdiff.storage import load_config
    gray_sha = weights_sha256(load_classifier(channels=1))
    identity = {"feature_space": "classifier", "feature_dim": 128}
    for name, extra in (("rgbref", {"image_shape": [3, 32, 32]}), ("grayref", {"image_shape": [1, 32, 32]}),
                        ("oldgrayref", {"extractor_sha256": gray_sha})):
        paths[name] = tmp / f"{name}.npz"
        np.savez(paths[name], mu=np.zeros(128), sigma=np.eye(128), **identity, **extra)
    paths["rgbfolder"] = tmp / "rgbfolder"
    paths["rgbfolder"].mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(paths["rgbfolder"] / f"{i:06d}.png")
    preset, state = load_config(model), load_file(str(model / "model.safetensors"))
    for name, change in (("nanweights", lambda t: t.fill_(float("nan"))), ("intweights", lambda t: t.to(torch.int32))):
        key = "nets.unified.dec.16x16_block0.affine.weight"
        broken = dict(state, **{key: change(state[key].clone())})
        save_pretrained(tmp / name, preset, broken)
        paths[name] = tmp / name
    paths["flipped"] = tmp / "flipped"
    shutil.copytree(model, paths["flipped"])
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (paths["flipped"] / "model.safetensors").write_bytes(bytes(data))
    config = json.loads((model / "config.json").read_text())
    for name, change in (("twonames", dict(class_names=["a", "b"])),
                         ("twelvenames", dict(class_names=list("abcdefghijkl"))),
                         ("groupnorm", dict(network=dict(config["network"], model_channels=18)))):
        paths[name] = tmp / name
        shutil.copytree(model, paths[name])
        (paths[name] / "config.json").write_text(json.dumps(dict(config, **change)))
    paths["subfolder"] = tmp / "subfolder"
    (paths["subfolder"] / "more").mkdir(parents=True)
    (paths["subfolder"] / "more" / "000001.png").write_bytes(b"x")
    paths["mislabelled"] = tmp / "mislabelled"
    paths["mislabelled"].mkdir()
    for f in ("000000.png", "000001.png"):
        (paths["mislabelled"] / f).write_bytes(b"x")
    (paths["mislabelled"] / "labels.csv").write_text('file,seed,class,class_name\n000000.png,0,0,"a"\n')
    stages = config["stages"]
    for name, plan in (("bigsnoise", {"stages": [dict(s, S_noise=1e300) for s in stages]}),
                       ("extrakey", {"stages": stages, "note": "x"})):
        paths[name] = tmp / f"{name}.json"
        paths[name].write_text(json.dumps(plan))
    paths["deepplan"] = tmp / "deep.json"
    paths["deepplan"].write_text("[" * 100_000 + "]" * 100_000)
    paths["npy"] = tmp / "x.npy"
    np.save(paths["npy"], np.zeros(128))
    paths["strmu"] = tmp / "strmu.npz"
    np.savez(paths["strmu"], mu=np.array(["abc"] * 128), sigma=np.eye(128), **identity)
    paths["model"] = model


@pytest.mark.parametrize("argv,named", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_naming_the_option(argv, named, model, tmp_path, capsys):
    (tmp_path / "nostages.json").write_text(json.dumps({"plan": []}))
    stages = json.loads((model / "config.json").read_text())["stages"]
    (tmp_path / "badvalue.json").write_text(json.dumps({"stages": [dict(s, steps="x") for s in stages]}))
    for name, change in (("wrongtype", lambda c: c["network"].update(model_channels="16")),
                         ("wrongshape", lambda c: c["network"].update(model_channels=24))):
        (tmp_path / name).mkdir()
        config = json.loads((model / "config.json").read_text())
        change(config)
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    paths = bad_files(model, tmp_path)
    argv = [a.format(tmp=tmp_path, nostages=tmp_path / "nostages.json", badvalue=tmp_path / "badvalue.json",
                     wrongtype=tmp_path / "wrongtype", wrongshape=tmp_path / "wrongshape", **paths) for a in argv]
    assert not list(tmp_path.rglob("*.tmp"))
    if argv[0] == "sample" and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(model)]
    if argv[0] == "sample" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "g.png")]
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_absurd_sigma_max_warns(model, tmp_path, capsys):
    with pytest.warns(UserWarning, match="sigma range .* far outside"):
        code, _, err = run(capsys, "sample", "--checkpoint", model, "--num", "3", "--out", tmp_path / "g.png",
                           "--stage", "32:sigma_max=1e4", "--no-progress")
    assert code == 0


# --- 5. interrupted training -------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_saves_a_state_exits_130_and_the_run_samples_from_it(tiny, tmp_path):
    spec = tmp_path / "preset.json"
    p = tiny()
    p.train.checkpoint_kimg = 100
    spec.write_text(p.to_json())
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lowdiff.cli", "train", "--preset", str(spec), "--data",
                             "synthetic:32", "--out", str(run_dir), "--duration-kimg", "100", "--no-progress"],
                            env=env, stderr=subprocess.PIPE, text=True)
    log, deadline = run_dir / "log.jsonl", time.time() + 240
    while (not log.exists() or not log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "state saved" in err
    assert list((run_dir / "checkpoints").glob("state-*.json")) and not (run_dir / "model.safetensors").exists()
    out = subprocess.run([sys.executable, "-m", "lowdiff.cli", "sample", "--checkpoint", str(run_dir), "--num", "2",
                          "--out", str(tmp_path / "g.png"), "--no-progress"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "EMA of training state" in out.stderr and (tmp_path / "g.png").is_file()


# --- 6. folder outputs of conditional models, seed lists ---------------------------------

def test_folder_output_records_classes_and_by_class_and_seed_lists_work(model, tmp_path, capsys):
    code, _, err = run(capsys, "sample", "--checkpoint", model, "--seeds", "0-2,10,20-21", "--out", tmp_path / "o",
                       "--by-class", "--no-progress")
    assert code == 0, err
    rows = (tmp_path / "o" / "labels.csv").read_text().splitlines()
    assert rows[0] == "file,seed,class,class_name"
    assert [r.split(",")[:3] for r in rows[1:]] == [["000000.png", "0", "0"], ["000001.png", "1", "0"],
                                                    ["000002.png", "2", "1"], ["000010.png", "10", "1"],
                                                    ["000020.png", "20", "2"], ["000021.png", "21", "2"]]
    assert rows[1].endswith('"circle"') and len(list((tmp_path / "o").glob("*.png"))) == 6
    code, _, err = run(capsys, "sample", "--checkpoint", model, "--num", "5", "--out", tmp_path / "r",
                       "--no-progress")                                    # folders: classes from the seeds
    assert code == 0 and len((tmp_path / "r" / "labels.csv").read_text().splitlines()) == 6


# --- 7. claims and file hygiene ----------------------------------------------------------

def test_version_and_train_help_state_defaults(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"lowdiff {lowdiff.__version__}"
    code, text, _ = run(capsys, "train", "--help")
    assert "the preset's" in text and "TensorBoard" in text and "lowdiff info" in text


def test_model_files_are_world_readable_json_is_finite_and_no_tmp_is_left(tiny, tmp_path, capsys):
    spec = tmp_path / "preset.json"
    spec.write_text(tiny().to_json())
    out = tmp_path / "run"
    assert run(capsys, "train", "--preset", spec, "--data", "synthetic:16", "--out", out, "--no-progress",
               "--duration-kimg", "0.016")[0] == 0
    files = [p for p in out.rglob("*") if p.is_file() and p.parent.name != "tensorboard"]
    assert not [p for p in files if p.suffix == ".tmp"]
    for name in ("model.safetensors", "config.json", "training_options.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    for p in files:
        if p.suffix == ".json":
            assert "Infinity" not in p.read_text() and "NaN" not in p.read_text(), p
    assert json.loads((out / "config.json").read_text())["stages"][0]["S_max"] == "inf"


@pytest.mark.slow
def test_pipeline_returns_generated_images_as_the_readme_says(model):
    out = lowdiff.load(model)(3, seed=0)
    assert out.images.shape == (3, 1, 32, 32) and out.images.dtype == torch.uint8 and out.nfe == {8: 3, 16: 3, 32: 7}


@pytest.mark.slow
def test_a_budget_no_plan_meets_is_refused_naming_the_cheapest_plan(model, ref, tmp_path, capsys):
    code, _, err = run(capsys, "tune", "--checkpoint", model, "--ref", ref, "--budget-nfe", "0.5", "--batch", "4",
                       "--screen-num", "4", "-n", "4", "--out", tmp_path / "p.json", "--no-progress")
    assert code == 2 and "smaller than the cheapest plan" in err and "effective NFE" in err and "ms per image" in err
    assert not (tmp_path / "p.json").exists()


# --- 8. round three (issue 43): integrity records, writes that cannot tear ---------------

def test_a_model_directory_without_a_checksum_loads_with_a_notice(model, tmp_path, capsys):
    config = json.loads((model / "config.json").read_text())
    del config["model_sha256"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="records no checksum of model.safetensors"):
        code, _, err = run(capsys, "sample", "--checkpoint", model, "--num", "3", "--out", tmp_path / "g.png",
                           "--no-progress")
    assert code == 0, err


def test_references_record_the_image_shape(ref):
    with np.load(ref) as f:
        assert f["image_shape"].tolist() == [1, 32, 32]


def full_disk(monkeypatch, module, name):
    """`module.name` writes half its output, then fails as a full disk does."""
    real = getattr(module, name)

    def write_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        target = next(a for a in args if isinstance(a, (str, Path)) or hasattr(a, "write"))
        if hasattr(target, "write"):
            target.truncate(10)
        else:
            Path(target).write_bytes(Path(target).read_bytes()[:10])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(module, name, write_then_fail)


@pytest.mark.parametrize("out", ["folder", "grid.png"])
def test_a_full_disk_while_sampling_is_one_line_and_leaves_no_torn_image(out, model, tmp_path, capsys, monkeypatch):
    from PIL import Image as PILImage
    full_disk(monkeypatch, PILImage.Image, "save")
    code, _, err = run(capsys, "sample", "--checkpoint", model, "--num", "3", "--out", tmp_path / out, "--no-progress")
    errors = [line for line in err.strip().splitlines() if not line.startswith("plan: ")]   # which plan: said first
    assert code == 2 and "no space left" in err and str(tmp_path) in err and len(errors) == 1, err
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".png", ".tmp")]


def test_a_full_disk_while_writing_statistics_leaves_no_npz(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, np, "savez")
    code, _, err = run(capsys, "eval", "ref", "--data", "synthetic:16:32", "--out", tmp_path / "ref.npz",
                       "--no-progress")
    last = err.strip().splitlines()[-1]                       # after the line naming the feature classifier
    assert code == 2 and "ref.npz: no space left" in last and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())


def test_a_full_disk_while_saving_a_training_state_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    import lowdiff.storage
    from safetensors import SafetensorError

    def no_space(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(lowdiff.storage, "save_file", no_space)
    spec = tmp_path / "preset.json"
    spec.write_text(tiny().to_json())
    code, _, err = run(capsys, "train", "--preset", spec, "--data", "synthetic:16", "--out", tmp_path / "run",
                       "--no-progress", "--duration-kimg", "0.016")
    last = err.strip().splitlines()[-1]                       # after the line saying what is trained
    assert code == 2 and "state-" in last and "no space left" in last and "Traceback" not in err, err
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_labels_rows_are_cut_back_when_a_batch_cannot_be_written(tmp_path, monkeypatch):
    from lowdiff.errors import WriteError
    from lowdiff.images import FolderWriter
    writer = FolderWriter(tmp_path / "o", ["a", "b"])
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    writer(images, [0, 1], [0, 1])
    before = (tmp_path / "o" / "labels.csv").read_text()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))          # a short write: disk full
    with pytest.raises(WriteError, match="labels.csv"):
        writer(images, [2, 3], [1, 0])
    assert (tmp_path / "o" / "labels.csv").read_text() == before


def test_transparent_images_are_read_with_a_notice(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    Image.new("RGBA", (8, 8), (10, 20, 30, 128)).save(tmp_path / "d" / "a.png")
    with pytest.warns(UserWarning, match="1 image.* with transparency .*a.png.* composited onto white"):
        code, _, err = run(capsys, "dataset", "info", tmp_path / "d")
    assert code == 0, err


@pytest.mark.slow
def test_a_killed_torchrun_rank_ends_the_other_with_one_line(model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "lowdiff.cli", "sample", "--checkpoint", str(model), "-n", "100000", "--batch", "4",
                             "--out", str(out), "--no-progress"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(list(out.glob("*.png"))) < 8 and time.time() < deadline:
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(max(int(w) for w in workers), signal.SIGKILL)                       # the later-started worker: rank 1
    _, err = proc.communicate(timeout=120)
    ours = [line for line in err.splitlines() if line.startswith(("lowdiff sample", "[rank"))]   # not torchrun's
    assert len(ours) == 1 and ("another process of the torchrun launch ended" in ours[0] or
                               "interrupted" in ours[0]), err
    assert "[rank0]" not in err and not list(out.glob("*.tmp"))
