"""DPM-Solver++(2M), (3M) and iPNDM: order of accuracy, first steps, NFE budget, truncated and final stages."""
import math

import pytest
import torch

from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.schedules import edm_sigmas
from lowdiff.diffusion.solvers import SOLVERS, _ipndm_step, sample_dpmpp_2m, sample_dpmpp_3m, sample_euler, sample_ipndm
from lowdiff.pipeline import Pipeline

SD = 0.5


def gaussian_denoiser(x, s):
    """Exact D for data ~ N(0, SD^2); the ODE maps x(s0) to x(s0) sqrt(SD^2 + s^2) / sqrt(SD^2 + s0^2)."""
    return x * SD ** 2 / (SD ** 2 + s ** 2)


def exact(x0, s0, s1):
    return x0 * math.sqrt(SD ** 2 + s1 ** 2) / math.sqrt(SD ** 2 + s0 ** 2)


def rel_err(x, ref):
    return ((x - ref).abs().max() / ref.abs().max()).item()


X0 = torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80


def test_second_order_to_sigma_zero():
    def err(solver, n):
        x, nfe, reached = solver(gaussian_denoiser, X0.clone(), edm_sigmas(n))
        assert nfe == n and reached == 0
        return rel_err(x, exact(X0, 80, 0))

    assert err(sample_dpmpp_2m, 128) < 2e-3
    assert 3.5 < err(sample_dpmpp_2m, 64) / err(sample_dpmpp_2m, 128) < 4.6     # error ~ 1/N^2
    assert 1.8 < err(sample_euler, 64) / err(sample_euler, 128) < 2.2          # error ~ 1/N
    assert err(sample_dpmpp_2m, 32) < err(sample_euler, 32) / 4


def test_second_order_on_a_truncated_schedule():
    def err(n):
        x, nfe, reached = sample_dpmpp_2m(gaussian_denoiser, X0.clone(), edm_sigmas(n, 0.01, 50, append_zero=False))
        assert nfe == n - 1 and reached == pytest.approx(0.01)
        return rel_err(x, exact(X0, 50, 0.01))

    assert 3.5 < err(64) / err(128) < 4.6


def test_first_step_is_euler_and_budget_truncates():
    sig = edm_sigmas(10, append_zero=False)
    one, nfe1, s1 = sample_dpmpp_2m(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    euler, _, _ = sample_euler(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    assert nfe1 == 1 and s1 == float(sig[1]) and torch.allclose(one, euler, rtol=1e-12)
    calls = []
    _, nfe, reached = sample_dpmpp_2m(lambda x, s: (calls.append(s), gaussian_denoiser(x, s))[1], X0.clone(), sig,
                                      max_nfe=4)
    assert nfe == len(calls) == 4 and reached == float(sig[4])
    _, nfe, reached = sample_dpmpp_2m(gaussian_denoiser, X0.clone(), sig, max_nfe=100)
    assert nfe == 9 and reached == float(sig[-1])


def test_last_step_to_zero_is_first_order():
    """Two steps to sigma = 0: the second returns the denoised estimate itself."""
    sig = torch.tensor([10.0, 1.0, 0.0], dtype=torch.float64)
    out, _, _ = sample_dpmpp_2m(gaussian_denoiser, X0.clone(), sig)
    x1 = 0.1 * X0 + 0.9 * gaussian_denoiser(X0, 10.0)                 # first step: Euler from 10 to 1
    assert torch.allclose(out, gaussian_denoiser(x1, 1.0), rtol=1e-12)


def test_dpmpp2m_in_every_stage_of_a_cascade(tiny):
    torch.manual_seed(0)
    preset = tiny()
    model = Denoiser.from_preset(preset).eval()
    stages = preset.stages.with_solver("dpmpp2m")
    assert "dpmpp2m" in SOLVERS and [s.steps for s in stages] == [7, 7, 7]
    preset.check_plan(stages)
    res = sample_cascade(model, stages, PerImageGenerator([0, 1]), channels=1)
    assert res.nfe == {8: 3, 16: 3, 32: 7} and res.stages[0].truncation_sigma > 0 and torch.isfinite(res.images).all()
    out = Pipeline(model, preset)(seeds=[0, 1], stages=stages)
    assert out.nfe == {8: 3, 16: 3, 32: 7}


def test_third_order_on_a_truncated_schedule():
    """3M on the exact Gaussian denoiser: error ~ 1/N^3 (8x per doubling) where every step
    but the first two has its full history; 2M falls 4x."""
    def err(solver, n):
        x, nfe, reached = solver(gaussian_denoiser, X0.clone(), edm_sigmas(n, 0.01, 50, append_zero=False))
        assert nfe == n - 1 and reached == pytest.approx(0.01)
        return rel_err(x, exact(X0, 50, 0.01))

    assert 7.0 < err(sample_dpmpp_3m, 64) / err(sample_dpmpp_3m, 128) < 9.5
    assert 7.0 < err(sample_dpmpp_3m, 128) / err(sample_dpmpp_3m, 256) < 9.5
    assert err(sample_dpmpp_3m, 64) < err(sample_dpmpp_2m, 64) / 5


def test_third_order_to_sigma_zero():
    def err(n):
        x, nfe, reached = sample_dpmpp_3m(gaussian_denoiser, X0.clone(), edm_sigmas(n))
        assert nfe == n and reached == 0
        return rel_err(x, exact(X0, 80, 0))

    assert 7.0 < err(32) / err(64) < 10 and err(64) < 1e-3


def test_3m_starts_like_2m_and_ends_first_order():
    """With one evaluation of history 3M is DPM-Solver++(1) (Euler), its second step integrates
    the line through two evaluations; the step to sigma = 0 returns the denoised estimate."""
    sig = edm_sigmas(10, append_zero=False)
    one, _, _ = sample_dpmpp_3m(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    euler, _, _ = sample_euler(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    assert torch.allclose(one, euler, rtol=1e-12)
    s0, s1, s2 = (float(v) for v in sig[:3])
    d0 = gaussian_denoiser(X0, s0)
    d1 = gaussian_denoiser(one, s1)
    h, h0 = math.log(s1 / s2), math.log(s0 / s1)
    two = math.exp(-h) * one + (1 - math.exp(-h)) * d1 + (h - 1 + math.exp(-h)) * (d1 - d0) / h0
    out, nfe, _ = sample_dpmpp_3m(gaussian_denoiser, X0.clone(), sig, max_nfe=2)
    assert nfe == 2 and torch.allclose(out, two, rtol=1e-10)
    out, _, _ = sample_dpmpp_3m(gaussian_denoiser, X0.clone(), torch.tensor([10.0, 1.0, 0.0], dtype=torch.float64))
    x1 = 0.1 * X0 + 0.9 * gaussian_denoiser(X0, 10.0)
    assert torch.allclose(out, gaussian_denoiser(x1, 1.0), rtol=1e-12)


def test_dpmpp3m_in_every_stage_of_a_cascade_and_on_flow_models(tiny):
    from conftest import tiny_dit_preset
    for preset in (tiny(), tiny_dit_preset()):
        torch.manual_seed(0)
        model = Denoiser.from_preset(preset).eval()
        plan = preset.stages.with_solver("dpmpp3m")
        preset.check_plan(plan)
        labels = torch.eye(preset.network.label_dim)[:2] if preset.network.label_dim else None
        res = sample_cascade(model, plan, PerImageGenerator([0, 1]), preset.network.in_channels, labels)
        assert res.nfe == preset.stages.with_solver("dpmpp2m").nfe_per_stage and torch.isfinite(res.images).all()
        assert all(s.truncation_sigma > 0 for s in res.stages[:-1])


def test_ipndm_full_history_step_is_fourth_order_exact_for_cubic_slopes():
    """With four derivatives at equally spaced sigmas, the step integrates a cubic d(sigma) exactly
    (Adams-Bashforth 4); with fewer, the lower-order formulas are exact for lower degrees."""
    h, s = -0.25, 3.0
    for degree, n in ((0, 1), (1, 2), (2, 3), (3, 4)):
        d = lambda sig: torch.tensor([sig ** degree + 2.0], dtype=torch.float64)
        history = [(d(s - k * h), s - k * h) for k in range(n)]            # newest first: s, s + 0.25, ...
        exact_step = ((s + h) ** (degree + 1) - s ** (degree + 1)) / (degree + 1) + 2.0 * h
        x = torch.tensor([1.0], dtype=torch.float64)
        assert torch.allclose(_ipndm_step(x, s, s + h, history), x + exact_step, rtol=1e-12)


def test_ipndm_converges_and_wins_at_few_steps():
    """On the exact Gaussian denoiser iPNDM converges with error ~ 1/N^2 (its first, Euler, step
    bounds the order) to sigma = 0 and on a truncated schedule, and at 8-16 evaluations (the
    regime it is for) its error is below DPM-Solver++(2M)'s and (3M)'s."""
    def err(solver, n, truncated=False):
        sig = edm_sigmas(n, 0.01, 50, append_zero=False) if truncated else edm_sigmas(n)
        x, nfe, reached = solver(gaussian_denoiser, X0.clone(), sig)
        assert nfe == len(sig) - 1 and reached == pytest.approx(float(sig[-1]))
        return rel_err(x, exact(X0, float(sig[0]), float(sig[-1])))

    for truncated in (False, True):
        assert 3.5 < err(sample_ipndm, 64, truncated) / err(sample_ipndm, 128, truncated) < 4.6
        for n in (8, 16):
            assert err(sample_ipndm, n, truncated) < min(err(sample_dpmpp_2m, n, truncated),
                                                         err(sample_dpmpp_3m, n, truncated))
    sig = edm_sigmas(10, append_zero=False)
    one, _, _ = sample_ipndm(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    euler, _, _ = sample_euler(gaussian_denoiser, X0.clone(), sig, max_nfe=1)
    assert torch.allclose(one, euler, rtol=1e-12)
    _, nfe, reached = sample_ipndm(gaussian_denoiser, X0.clone(), sig, max_nfe=4)
    assert nfe == 4 and reached == float(sig[4])


def test_ipndm_in_every_stage_of_a_cascade(tiny):
    torch.manual_seed(0)
    preset = tiny()
    model = Denoiser.from_preset(preset).eval()
    stages = preset.stages.with_solver("ipndm")
    preset.check_plan(stages)
    res = sample_cascade(model, stages, PerImageGenerator([0, 1]), channels=1)
    assert res.nfe == {8: 3, 16: 3, 32: 7} and res.stages[0].truncation_sigma > 0 and torch.isfinite(res.images).all()
