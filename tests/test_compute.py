"""Training compute as a number (issue 36): the FLOPs per training image equal a count made by
hand, every log record carries the run's cumulative compute, and resuming keeps the totals."""
import json

import pytest
import torch
from torch import nn

from lowdiff.data import make_synthetic
from lowdiff.info import describe, format_info, training_flops_per_image
from lowdiff.nn.unet import UNetBlock, UnifiedUNet
from lowdiff.train.compute import duration_kimg_for, recorded_compute
from lowdiff.train.loop import Trainer


def hand_count_forward(net: UnifiedUNet, resolution: int, cond: bool) -> int:
    """Forward FLOPs (2 x multiply-adds) of one image, counted from the layers' shapes: every
    convolution (2 x output elements x input channels x kernel area), every linear layer
    (2 x rows x inputs x outputs) and every attention (QK^T and AV: 2 x 2 x pixels^2 x channels)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.Linear):
            total += 2 * (output.numel() // module.out_features) * module.in_features * module.out_features
        elif isinstance(module, UNetBlock) and module.attention:
            _, c, h, w = output.shape
            total += 4 * (h * w) ** 2 * c

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    c = net.cfg.in_channels
    x = torch.zeros(1, c, resolution, resolution)
    kw = dict(cond=torch.zeros_like(x), cond_noise_labels=torch.zeros(1)) if cond else {}
    with torch.no_grad():
        net(x, torch.zeros(1), class_labels=torch.zeros(1, net.cfg.label_dim), **kw)
    for h in hooks:
        h.remove()
    return total


def test_training_flops_per_image_equal_the_hand_count(tiny):
    """Forward + backward = 3x the forward at every stage resolution (the documented convention)."""
    preset = tiny(label_dim=10)
    net = UnifiedUNet(preset.network)
    hand = {r: 3 * hand_count_forward(net, r, cond=i > 0) for i, r in enumerate(preset.resolutions)}
    assert training_flops_per_image(preset) == hand
    baseline = tiny(stages=(32,), label_dim=10)
    assert training_flops_per_image(baseline) == {32: 3 * hand_count_forward(UnifiedUNet(baseline.network), 32, False)}
    info = describe(preset)
    assert info["train"]["gflops_per_image_total"] == round(sum(hand.values()) / 1e9, 4)
    assert "training FLOPs" in format_info(info) and "32x32" in format_info(info)


def test_log_records_cumulative_compute_and_resume_keeps_the_totals(tiny, tmp_path, one_thread):
    preset, ds = tiny(), make_synthetic(16)
    per_image = sum(training_flops_per_image(preset).values())
    Trainer(tiny(), ds, tmp_path / "run").run(duration_kimg=0.016, progress=False)    # 2 steps of 8
    Trainer(tiny(), ds, tmp_path / "run").run(duration_kimg=0.032, progress=False)    # resumed: 2 more
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for r in log:
        assert r["train_tflop"] == pytest.approx(r["kimg"] * 1000 * per_image / 1e12, rel=1e-6)
        assert r["dataset"] == "synthetic"
    seconds = [r["thread_seconds"] for r in log]
    assert seconds == sorted(seconds) and seconds[2] >= seconds[1] > 0      # the resumed run adds to the total
    assert recorded_compute(tmp_path / "run").tflop == log[-1]["train_tflop"]


def test_a_compute_budget_becomes_images(tiny):
    preset = tiny()
    per_batch = preset.train.batch * sum(training_flops_per_image(preset).values()) / 1e12
    assert duration_kimg_for(preset, 10 * per_batch, "--duration-tflop") == pytest.approx(10 * preset.train.batch / 1000)


def test_a_bundled_model_keeps_its_runs_compute_for_match_compute():
    """`--match-compute bundled:fashion-edm-cond`: the bundled baseline's training.json gives its
    run's compute, its images times the preset's FLOPs per image."""
    from lowdiff import storage
    from lowdiff.bundled import resolve
    from lowdiff.train.compute import training_tflop
    run = recorded_compute("bundled:fashion-edm-cond")
    preset = storage.load_config(resolve("bundled:fashion-edm-cond"))
    assert run.tflop == pytest.approx(training_tflop(preset, 80_000))
    assert run.dataset == "fashion-mnist:train"
    lowdiff = storage.load_config(resolve("bundled:fashion-lowdiff-cond"))
    assert duration_kimg_for(lowdiff, run.tflop, "--match-compute") == pytest.approx(
        80 * sum(training_flops_per_image(preset).values()) / sum(training_flops_per_image(lowdiff).values()))
