"""Progressive plans (issue 37): a single-resolution network sampled at lower resolutions first,
then upsampled and re-noised (`StageConfig.handover`, `cascade.handover`)."""
import pytest
import torch

from helpers import run
from lowdiff.diffusion import pyramid
from lowdiff.diffusion.cascade import PerImageGenerator, handover, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.plan import StagePlan
from lowdiff.diffusion.solvers import SOLVERS
from lowdiff.errors import ConfigError
from lowdiff.eval.tune_budget import CostModel, TuneOptions
from lowdiff.eval.tune_space import coordinates, progressive_resolutions, progressive_starts


@pytest.fixture(scope="module")
def baseline():
    """A tiny single-resolution (32x32) model with random weights, and its denoiser."""
    from conftest import tiny_preset
    torch.manual_seed(0)
    preset = tiny_preset(stages=(32,))
    return preset, Denoiser.from_preset(preset).eval()


def progressive(preset, kind="spectral", switch=3.0):
    """16x16 from noise down to switch / 2 in 4 DPM-Solver++(2M) steps, then 32x32 from `switch`."""
    return preset.stages.with_solver("dpmpp2m").override(
        [f"16:steps=5,sigma_min={switch / 2},sigma_max=80", f"32:handover={kind},sigma_max={switch},steps=4"])


def test_a_one_stage_plan_is_the_plain_sampler(baseline):
    preset, den = baseline
    plan = preset.stages.with_solver("dpmpp2m")
    seeds = [5, 6, 7]
    got = sample_cascade(den, plan, PerImageGenerator(seeds), 1).images
    sigmas = plan.sigmas(0)
    x = PerImageGenerator(seeds).randn((1, 32, 32)).double() * sigmas[0].item()
    want, _, _ = SOLVERS["dpmpp2m"](lambda x, s: den(x.float(), s).double(), x, sigmas)
    assert torch.equal(got, want.float())


def test_the_network_runs_at_lower_resolutions_only_where_its_levels_divide(baseline):
    preset, den = baseline
    net = preset.network                                   # 3 levels: a side must be divisible by 4
    assert [r for r in (2, 4, 6, 8, 16, 32) if net.runs_at(r)] == [4, 8, 16]
    out = den(torch.randn(2, 1, 16, 16), torch.tensor(2.0))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_a_progressive_plan_samples_each_stage_and_is_deterministic_per_seed(baseline):
    preset, den = baseline
    plan = progressive(preset)
    preset.check_plan(plan)
    assert plan.progressive and plan.resolutions == [16, 32]
    together = sample_cascade(den, plan, PerImageGenerator([1, 2, 3]), 1)
    alone = sample_cascade(den, plan, PerImageGenerator([2]), 1)
    again = sample_cascade(den, plan, PerImageGenerator([1, 2, 3]), 1)
    assert together.nfe == {16: 4, 32: 4} and [s.handover for s in together.stages] == ["none", "spectral"]
    assert torch.equal(together.images, again.images)
    assert torch.allclose(together.images[1:2], alone.images, atol=1e-5)     # batch layout changes only rounding
    plain = sample_cascade(den, progressive(preset, "plain"), PerImageGenerator([1, 2, 3]), 1)
    assert not torch.allclose(plain.images, together.images)


def haar_variances(x: torch.Tensor, factor: int = 2) -> tuple[float, float]:
    """Per-pixel variance of x's block means (upsampled) and of its detail within blocks."""
    means = pyramid.upsample(pyramid.downsample(x, x.shape[-1] // factor), x.shape[-1])
    return means.var().item(), (x - means).var().item()


def band_powers(x: torch.Tensor) -> tuple[float, float]:
    """Mean power per Fourier coefficient (normalised: white noise of level s gives s^2) in the low
    band (both frequencies below a quarter of the side) and the rest."""
    n = x.shape[-1]
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1)) / (n * n)
    k = torch.fft.fftfreq(n).abs()
    low = (k[:, None] < 0.25) & (k[None, :] < 0.25)
    return power[low].mean().item(), power[~low].mean().item()


@pytest.mark.parametrize("sigma_below, sigma", [(1.0, 2.0), (0.5, 3.0)])
def test_the_handovers_add_the_intended_noise_per_frequency_band(sigma_below, sigma):
    """On white noise (a zero image at sigma_below, 16x16, upsampled to 32x32): the spectral hand-over
    gives white noise of level sigma (flat spectrum; block means sigma^2 / 4, detail 3 sigma^2 / 4);
    the plain one adds white noise of variance sigma^2 - sigma_below^2 to block-constant noise, so its
    block means keep sigma_below^2 + (sigma^2 - sigma_below^2) / 4 and its detail only
    3 (sigma^2 - sigma_below^2) / 4: too much low-frequency noise, too little high."""
    g = torch.Generator().manual_seed(0)
    below = sigma_below * torch.randn(4000, 1, 16, 16, generator=g, dtype=torch.float64)
    noise = torch.randn(4000, 1, 32, 32, generator=g, dtype=torch.float64)
    spectral = handover("spectral", below, sigma_below, sigma, noise)
    means, detail = haar_variances(spectral)
    assert means == pytest.approx(sigma ** 2 / 4, rel=0.02) and detail == pytest.approx(3 * sigma ** 2 / 4, rel=0.02)
    low, high = band_powers(spectral)
    assert low == pytest.approx(sigma ** 2, rel=0.02) and high == pytest.approx(sigma ** 2, rel=0.02)
    plain = handover("plain", below, sigma_below, sigma, noise)
    means, detail = haar_variances(plain)
    added = sigma ** 2 - sigma_below ** 2
    assert means == pytest.approx(sigma_below ** 2 + added / 4, rel=0.02)
    assert detail == pytest.approx(3 * added / 4, rel=0.02)
    low, high = band_powers(plain)
    assert low > sigma ** 2 > high                   # not white: block-constant noise left over


def test_the_spectral_handover_keeps_the_image_block_means():
    image = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    below = pyramid.downsample(image, 16)
    x = handover("spectral", below, 0.0, 1e-9, torch.randn(2, 1, 32, 32, dtype=torch.float64))
    assert torch.allclose(x, pyramid.upsample(below, 32), atol=1e-8)


@pytest.mark.parametrize("overrides, message", [
    (["2:steps=4,sigma_min=2", "32:handover=plain,sigma_max=4"],
     "stage 2: the network cannot run at 2x2: its 3 levels"),
    (["16:steps=4,sigma_min=1"], "stage 32: a progressive plan's stage above the lowest continues the stage below: "
                                 "set handover=plain or handover=spectral"),
    (["16:steps=4,sigma_min=1,handover=plain", "32:handover=plain,sigma_max=3"], "stage 16: the lowest stage"),
    (["16:steps=4,sigma_min=1", "32:handover=plain,sigma_max=500"], "stage 32: the switch at sigma_max 500 is outside"),
    (["16:steps=4,sigma_min=1,sigma_max=2", "32:handover=plain,sigma_max=3"],
     "stage 32: the switch sigma_max 3 is above the sigma_max of stage 16 (2)"),
    (["16:steps=4,sigma_min=1", "32:handover=spectral,sigma_max=1.5"],
     "stage 32: handover=spectral at sigma_max 1.5 needs sigma_max >= 2 x 1"),
    (["16:steps=4,sigma_min=1", "32:handover=plain,sigma_max=0.8"], "stage 32: handover=plain at sigma_max 0.8 needs"),
    (["16:steps=4,sigma_min=1", "32:handover=spectral,sigma_max=3,start=upsampled"], "leave start=noise"),
    (["16:steps=4,sigma_min=1", "32:handover=fourier,sigma_max=3"], "stage 32: handover 'fourier', choose none"),
])
def test_bad_progressive_plans_are_refused_naming_the_field(baseline, overrides, message):
    preset, _ = baseline
    with pytest.raises(ConfigError, match=None) as e:
        preset.check_plan(preset.stages.with_solver("dpmpp2m").override(overrides))
    assert message in str(e.value)


def test_a_progressive_plan_on_a_cascade_is_refused(tiny):
    cascade = tiny()
    with pytest.raises(ConfigError, match="stage 32: handover=plain makes a progressive plan"):
        cascade.check_plan(cascade.stages.override(["32:handover=plain"]))
    two = StagePlan(progressive(tiny(stages=(32,))))
    with pytest.raises(ConfigError, match="stage 32: handover=spectral makes a progressive plan"):
        cascade.check_plan(two)


def test_sample_progressively_from_the_command_line(tmp_path, capsys):
    """The acceptance command of issue 37 on the bundled EDM model; a cascade model refuses it."""
    stages = ["--stage", "16:steps=7,sigma_min=1.5,solver=dpmpp2m",
              "--stage", "32:handover=spectral,sigma_max=3,steps=5,solver=dpmpp2m,sigma_min=0.064"]
    code, _, err = run(capsys, "sample", "--checkpoint", "bundled:fashion-edm-cond", *stages, "--num", "2",
                       "--random-class", "--out", tmp_path / "p.png", "--no-progress")
    assert code == 0, err
    assert "NFE per stage {16: 6, 32: 5}" in err and "continues the stage below at sigma 3 (spectral hand-over)" in err
    code, out, _ = run(capsys, "info", "bundled:fashion-edm-cond")            # the shipped tuned progressive plan
    assert code == 0 and "(8/16/32)" in next(line for line in out.splitlines() if "progressive" in line.split()[:1])
    code, _, err = run(capsys, "sample", "--checkpoint", "bundled:fashion-edm-cond", "--plan", "progressive",
                       "--num", "2", "--random-class", "--out", tmp_path / "t.png", "--no-progress")
    assert code == 0 and "plan: progressive (NFE 4/2/4" in err, err
    code, _, err = run(capsys, "sample", "--checkpoint", "bundled:fashion-lowdiff-cond", "--stage",
                       "32:handover=plain", "--num", "2", "--random-class", "--out", tmp_path / "q.png",
                       "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "handover=plain makes a progressive plan" in err


def test_the_tuner_searches_progressive_plans_of_a_single_resolution_model(baseline, tiny):
    preset, _ = baseline
    opts = TuneOptions(budget_nfe=6, progressive="only")
    lower = progressive_resolutions(preset, opts)
    assert lower == [(16,), (8, 16)] and progressive_resolutions(tiny(), opts) == []
    assert progressive_resolutions(preset, TuneOptions(progressive="no")) == []
    costs = CostModel({8: 0.1, 16: 0.3, 32: 1.0}, batch=1)
    starts = progressive_starts(preset.stages, lower, costs, opts)
    assert {p[-1].handover for _, p in starts} == {"spectral", "plain"} and {len(p) for _, p in starts} == {2, 3}
    for _, p in starts:
        preset.check_plan(p)
        assert costs.effective_nfe(p) <= 6
    coords = dict(coordinates(starts[0][1], ("dpmpp2m",), warm_start=True))
    assert "32:switch" in coords and "32:handover" in coords and "32:start" not in coords
    for _, p in coords["32:switch"](starts[0][1]) + coords["32:handover"](starts[0][1]):
        preset.check_plan(p)
