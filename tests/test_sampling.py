"""Solvers over explicit sigma arrays, truncation, the cascade, and per-seed determinism."""
import math

import pytest
import torch

from lowdiff.diffusion import pyramid
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.plan import effective_nfe
from lowdiff.diffusion.schedules import edm_sigmas
from lowdiff.diffusion.solvers import sample_euler, sample_heun
from lowdiff.pipeline import Pipeline


def test_edm_sigmas_match_edm():
    s = edm_sigmas(18)
    assert s.dtype == torch.float64 and len(s) == 19 and s[-1] == 0
    assert s[0] == pytest.approx(80) and s[17] == pytest.approx(0.002)
    assert [round(float(v), 2) for v in s[1:4]] == [57.59, 40.79, 28.37]
    assert len(edm_sigmas(9, append_zero=False)) == 9


def gaussian_denoiser(sd=0.5):
    """Exact D for data ~ N(0, sd^2): the ODE solution is x * sqrt(sd^2+s^2)/sqrt(sd^2+s0^2)."""
    return lambda x, s: x * sd ** 2 / (sd ** 2 + s ** 2)


def test_heun_is_second_order_on_the_probability_flow_ode():
    x0 = torch.randn(1000, dtype=torch.float64) * 80
    exact = x0 * 0.5 / math.sqrt(0.25 + 80 ** 2)

    def err(solver, n):
        x, nfe, reached = solver(gaussian_denoiser(), x0.clone(), edm_sigmas(n))
        assert reached == 0 and nfe == (2 * n - 1 if solver is sample_heun else n)
        return ((x - exact).abs().max() / exact.abs().max()).item()

    assert err(sample_heun, 128) < 1e-3
    assert 3.5 < err(sample_heun, 64) / err(sample_heun, 128) < 4.5      # error ~ 1/N^2
    assert 1.8 < err(sample_euler, 64) / err(sample_euler, 128) < 2.2    # error ~ 1/N


@pytest.mark.parametrize("budget,steps_done,nfe", [(18, 9, 18), (19, 10, 19), (1, 1, 1)])
def test_truncation_budget(budget, steps_done, nfe):
    sig = edm_sigmas(18, append_zero=False)
    calls = []
    den = lambda x, s: (calls.append(s), x * 0)[1]
    _, spent, reached = sample_heun(den, torch.zeros(1), sig, max_nfe=budget)
    assert spent == nfe == len(calls)
    assert reached == pytest.approx(float(sig[steps_done]))


def tiny_pipe(tiny, **kw) -> Pipeline:
    torch.manual_seed(0)
    preset = tiny(**kw)
    return Pipeline(Denoiser.from_preset(preset), preset)


def test_truncation_hands_next_stage_the_exact_noisy_state(tiny):
    pipe = tiny_pipe(tiny)
    model, stages = pipe.denoiser, pipe.preset.stages
    seen = []

    def spy(x, sigma, labels=None, cond=None, sigma_cond=None):
        seen.append((x.shape[-1], cond, sigma_cond))
        return model(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)

    res = sample_cascade(spy, stages, PerImageGenerator([3, 4]), channels=1)
    # Re-run the lowest stage alone with the same per-image generators.
    rng = PerImageGenerator([3, 4])
    sig = stages.sigmas(0)
    x0 = rng.randn((1, 8, 8)).double() * sig[0].item()
    x8, nfe8, s8 = sample_heun(lambda x, s: model(x.float(), s).double(), x0, sig, max_nfe=stages[0].nfe)
    first16 = next(c for c in seen if c[0] == 16)
    assert res.stages[0].truncation_sigma == s8 and res.stages[0].nfe == nfe8 == 3
    assert torch.allclose(first16[1], pyramid.upsample(x8, 16).float())
    assert torch.allclose(first16[2], torch.full((2,), s8))
    assert res.nfe == {8: 3, 16: 3, 32: 7} and res.images.shape == (2, 1, 32, 32)


@pytest.mark.slow
def test_same_seed_same_image_at_batch_1_and_8(tiny):
    pipe = tiny_pipe(tiny, label_dim=3)
    batch8 = pipe(seeds=list(range(10, 18)), batch=8)
    single = pipe(seeds=[13], batch=1)
    assert torch.equal(single.images[0], batch8.images[3]) or \
        (single.images[0].int() - batch8.images[3].int()).abs().max() <= 1
    assert single.class_labels == [batch8.class_labels[3]]
    again = pipe(seeds=list(range(10, 18)), batch=4)
    assert (again.images.int() - batch8.images.int()).abs().max() <= 1


@pytest.mark.slow
def test_stochastic_churn_is_deterministic_per_seed(tiny):
    pipe = tiny_pipe(tiny)
    stages = pipe.preset.stages.override(["32:S_churn=10"])
    a = pipe(seeds=[1, 2], stages=stages)
    b = pipe(seeds=[2], stages=stages)
    assert (a.images[1].int() - b.images[0].int()).abs().max() <= 1


def test_effective_nfe_is_latency_weighted_and_rounded_up():
    assert effective_nfe({8: 18, 16: 13, 32: 17}, {8: 7.7, 16: 40, 32: 153}) == math.ceil(
        17 + 13 * 40 / 153 + 18 * 7.7 / 153)
    assert effective_nfe({32: 35}, {32: 1.0}) == 35
