"""DPM-Solver++(2M): order of accuracy, first step, NFE budget, truncated and final stages."""
import math

import pytest
import torch

from lowdiff.config import ConfigError
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.solvers import SOLVERS, edm_sigmas, sample_dpmpp_2m, sample_euler
from lowdiff.pipeline import Pipeline, check_plan, with_solver

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
    model = Denoiser(tiny()).eval()
    stages = with_solver(model.preset.stages, "dpmpp2m")
    assert "dpmpp2m" in SOLVERS and [s.steps for s in stages] == [7, 7, 7]
    check_plan(model.preset, stages)
    res = sample_cascade(model, stages, PerImageGenerator([0, 1]), channels=1)
    assert res.nfe == {8: 3, 16: 3, 32: 7} and res.stages[0].sigma_end > 0 and torch.isfinite(res.images).all()
    out = Pipeline(model)(seeds=[0, 1], stages=stages)
    assert out.nfe == {8: 3, 16: 3, 32: 7}


def test_with_solver_keeps_nfe_and_round_trips(tiny):
    stages = tiny().stages
    back = with_solver(with_solver(stages, "dpmpp2m"), "heun")
    assert [(s.steps, s.nfe, s.solver) for s in back] == [(s.steps, s.nfe, s.solver) for s in stages]
    with pytest.raises(ConfigError, match="dpmpp2m"):
        check_plan(tiny(), with_solver(stages, "bogus"))
