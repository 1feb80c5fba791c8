"""ODE solvers as small functions over an explicit sigma array (k-diffusion style): Euler,
EDM's Heun (Karras et al. 2022, Algorithm 2), the multistep DPM-Solver++(2M) and (3M)
(Lu et al. 2022, "DPM-Solver++") and iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion
Models with Exponential Integrator", Sec. 4 / App. B), and multistep consistency sampling for
consistency-tuned models (Song et al. 2023, Alg. 1). The sigma arrays come from
lowdiff/diffusion/schedules.py.

`denoise(x, sigma)` is any callable returning D(x; sigma). A sigma array ending at 0
integrates to a clean sample; one ending at sigma > 0 stops there (truncation). `max_nfe`
stops the solver once that many evaluations are spent; when a single evaluation is left
for a step, that step is taken with Euler. Every solver returns (x, nfe, sigma_reached).
`SOLVERS` registers each with its cost: evaluations per step, and one for a step to 0, and
whether it is valid on the flow ODE.

The flow ODE: with the flow's D = x + sigma F (lowdiff/diffusion/precond.py, `Flow`), the
rectified flow dx/dt = F is dx/dsigma = (x - D) / sigma (sigma = 1 - t), the same ODE in D as
EDM's (Eq. 3 with s = 1). Euler, Heun and iPNDM integrate any ODE; DPM-Solver++'s update is
that ODE's exact variation-of-constants solution in lambda = -log sigma with D interpolated
(its first-order step equals the flow's DDIM step, (s'/s) x + (1 - s'/s) D). The consistency
sampler is not: its re-noising adds noise to x = y + sigma n, not the flow's
x = (1 - sigma) y + sigma n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .precond import consistency_output

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def _churn(x, sigma, i, n_steps, S_churn, S_min, S_max, S_noise, noise_fn):
    """EDM Alg. 2 lines 4-6: raise the noise level from sigma to sigma_hat."""
    gamma = min(S_churn / n_steps, 2 ** 0.5 - 1) if S_churn > 0 and S_min <= sigma <= S_max else 0.0
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return x + (sigma_hat ** 2 - sigma ** 2) ** 0.5 * S_noise * noise_fn(x), sigma_hat


def sample_heun(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                noise_fn: NoiseFn | None = None, callback=None):
    """EDM's 2nd-order Heun sampler; the step to sigma = 0 is Euler (NFE = 2N - 1)."""
    return _solve(denoise, x, sigmas, heun=True, max_nfe=max_nfe, churn=(S_churn, S_min, S_max, S_noise),
                  noise_fn=noise_fn, callback=callback)


def sample_euler(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                 S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                 noise_fn: NoiseFn | None = None, callback=None):
    """1st-order Euler sampler (NFE = N)."""
    return _solve(denoise, x, sigmas, heun=False, max_nfe=max_nfe, churn=(S_churn, S_min, S_max, S_noise),
                  noise_fn=noise_fn, callback=callback)


def _solve(denoise, x, sigmas, *, heun, max_nfe, churn, noise_fn, callback):
    S_churn = churn[0]
    if S_churn > 0 and noise_fn is None:
        noise_fn = torch.randn_like
    sig = [float(s) for s in sigmas]
    budget = float("inf") if max_nfe is None else max_nfe
    n_steps, nfe, reached = len(sig) - 1, 0, sig[0]
    for i in range(n_steps):
        if nfe >= budget:
            break
        x_hat, s_hat = _churn(x, sig[i], i, n_steps, *churn, noise_fn)
        s_next = sig[i + 1]
        d = (x_hat - denoise(x_hat, s_hat)) / s_hat                      # dx/dsigma at sigma_hat
        nfe += 1
        x_next = x_hat + (s_next - s_hat) * d                            # Euler step
        if heun and s_next > 0 and nfe < budget:                         # 2nd-order correction
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            nfe += 1
            x_next = x_hat + (s_next - s_hat) * 0.5 * (d + d_next)
        x, reached = x_next, s_next
        if callback is not None:
            callback(i, x, reached, nfe)
    return x, nfe, reached


def sample_dpmpp_2m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                    S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                    noise_fn: NoiseFn | None = None, callback=None):
    """DPM-Solver++(2M), one evaluation per step (NFE = N).

    With x = y + sigma n (alpha = 1) and lambda = -log sigma, the probability-flow ODE
    from sigma to sigma_next, h = lambda_next - lambda, is solved exactly by (DPM-Solver++ Eq. 9)
        x_next = (sigma_next / sigma) x + sigma_next * int_lambda^lambda_next e^l D(x_l, l) dl.
    Holding D constant gives x_next = e^-h x + (1 - e^-h) D, DPM-Solver++(1) (= DDIM), which
    is also the Euler step in sigma. The 2M update (Alg. 2) extrapolates D linearly in lambda
    from the previous evaluation:
        D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},   r = h_{i-1} / h_i.
    The first step has no history and the step to sigma = 0 (h infinite) is first order,
    the lower-order final step that keeps few-step sampling stable.
    """
    return _multistep(denoise, x, sigmas, _dpmpp_2m_step, max_nfe, (S_churn, S_min, S_max, S_noise), noise_fn,
                      callback)


def sample_dpmpp_3m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                    S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                    noise_fn: NoiseFn | None = None, callback=None):
    """DPM-Solver++(3M), one evaluation per step (NFE = N), third order.

    The same exact solution as 2M, with D(lambda) replaced by the quadratic through the last
    three evaluations D_0, D_1, D_2 (at lambda_0 > lambda_1 > lambda_2; Newton divided
    differences d01, d12, d012), integrated exactly against e^l. Writing D around lambda_0
    as D_0 + D' u + d012 u^2 (u = lambda - lambda_0, D' = d01 + d012 (lambda_0 - lambda_1)),
        x_next = e^-h x + (1 - e^-h) D_0 + (h - 1 + e^-h) D' + (h^2 - 2h + 2 - 2 e^-h) d012,
    the coefficients being e^-h int_0^h e^u u^k du for k = 0, 1, 2 (DPM-Solver++'s
    multistep Taylor expansion, with the derivatives estimated from the history). The first
    step is first order, the second second order (linear through two evaluations), and the
    step to sigma = 0 is first order, as in 2M.
    """
    return _multistep(denoise, x, sigmas, _dpmpp_3m_step, max_nfe, (S_churn, S_min, S_max, S_noise), noise_fn,
                      callback)


def sample_ipndm(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                 S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                 noise_fn: NoiseFn | None = None, callback=None):
    """iPNDM, one evaluation per step (NFE = N), up to fourth order.

    The probability-flow ODE dx/dsigma = d(x, sigma) = (x - D(x; sigma)) / sigma (EDM Eq. 3 with
    s = 1) is stepped with the Adams-Bashforth formulas over the derivatives of the last (up to)
    four steps, whatever the step sizes, as in iPNDM (Zhang & Chen 2023, the "improved PNDM"):
    PNDM (Liu et al. 2022) starts its linear multistep method with Runge-Kutta steps; iPNDM
    starts it with the lower-order Adams-Bashforth steps instead, so every step costs one
    evaluation:
        x_next = x + h d_0                                          (first step: Euler)
        x_next = x + h (3 d_0 - d_1) / 2
        x_next = x + h (23 d_0 - 16 d_1 + 5 d_2) / 12
        x_next = x + h (55 d_0 - 59 d_1 + 37 d_2 - 9 d_3) / 24,     h = sigma_next - sigma.
    The step to sigma = 0 uses the same formula (d stays finite at the last sigma > 0).
    """
    return _multistep(denoise, x, sigmas, _ipndm_step, max_nfe, (S_churn, S_min, S_max, S_noise), noise_fn,
                      callback, record=lambda x, denoised, s: ((x - denoised) / s, s), keep=4)


def _record_denoised(x, denoised, s):
    """What the DPM-Solver++ steps keep of an evaluation: D and lambda = -log sigma."""
    return denoised, -math.log(s)


def _multistep(denoise, x, sigmas, step, max_nfe, churn, noise_fn, callback, record=_record_denoised, keep=3):
    """The loop of the one-evaluation multistep solvers: evaluate D once per step, keep
    `record(x, D, sigma)` of the last `keep` evaluations, newest first, and let
    `step(x, s, s_next, history)` move x."""
    if churn[0] > 0 and noise_fn is None:
        noise_fn = torch.randn_like
    sig = [float(s) for s in sigmas]
    n_steps = len(sig) - 1
    budget = n_steps if max_nfe is None else min(max_nfe, n_steps)
    nfe, reached, history = 0, sig[0], []
    for i in range(budget):
        x, s = _churn(x, sig[i], i, n_steps, *churn, noise_fn)
        s_next = sig[i + 1]
        history = [record(x, denoise(x, s), s)] + history[:keep - 1]
        nfe += 1
        x = step(x, s, s_next, history)
        reached = s_next
        if callback is not None:
            callback(i, x, reached, nfe)
    return x, nfe, reached


# Adams-Bashforth coefficients by the number of derivatives available (newest first).
_ADAMS_BASHFORTH = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def _ipndm_step(x, s, s_next, history):
    """x + h * sum_k c_k d_k over the stored derivatives d_k (see `sample_ipndm`)."""
    slope = sum(c * d for c, (d, _) in zip(_ADAMS_BASHFORTH[len(history) - 1], history))
    return x + (s_next - s) * slope


def _dpmpp_2m_step(x, s, s_next, history):
    """One DPM-Solver++ step from s to s_next; second order when there is a previous evaluation and s_next > 0."""
    denoised = history[0][0]
    if s_next == 0:
        return denoised                                                  # e^-h = 0: x_next = D
    lam, lam_next = -math.log(s), -math.log(s_next)
    h = lam_next - lam
    if len(history) > 1:
        d_prev, lam_prev = history[1]
        r = (lam - lam_prev) / h
        denoised = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * d_prev
    return (s_next / s) * x - math.expm1(-h) * denoised


def _dpmpp_3m_step(x, s, s_next, history):
    """One step of the exponential integrator over the polynomial through the last (up to) three evaluations."""
    d0, lam0 = history[0]
    if s_next == 0:
        return d0
    h = -math.log(s_next) - lam0
    decay = math.exp(-h)
    x_next = decay * x - math.expm1(-h) * d0
    if len(history) == 1:
        return x_next
    d1, lam1 = history[1]
    d01 = (d0 - d1) / (lam0 - lam1)
    if len(history) == 2:
        return x_next + (h - 1 + decay) * d01
    d2, lam2 = history[2]
    d012 = (d01 - (d1 - d2) / (lam1 - lam2)) / (lam0 - lam2)
    slope = d01 + d012 * (lam0 - lam1)
    return x_next + (h - 1 + decay) * slope + (h * h - 2 * h + 2 - 2 * decay) * d012


def sample_consistency(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, max_nfe: int | None = None,
                       S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0,
                       noise_fn: NoiseFn | None = None, callback=None):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) for a consistency-tuned
    model (lowdiff/diffusion/consistency.py). The stage ends at s = sigmas[max_nfe] when it is
    truncated, else at the last level above 0 (the final stage's sigma_min; the step from there
    to 0 is the boundary condition f(x, s) = x and costs nothing). Evaluation k, at t_k = sigmas[k]
    for k before the end, jumps straight to s, x <- f_s(x, t_k) (precond.consistency_output);
    before every evaluation but the first, x is re-noised from s to t_k with fresh noise of
    variance t_k^2 - s^2 (x = y + sigma n). So steps N + 1 with nfe N (truncated), or N + 1 levels
    and the appended 0 (final), is the N-step sampler. Churn does not apply."""
    sig = [float(s) for s in sigmas]
    end = len(sig) - 1 if max_nfe is None else min(max_nfe, len(sig) - 1)
    if max_nfe is None and sig[-1] == 0:
        end -= 1
    boundary, noise_fn = sig[end], noise_fn or torch.randn_like
    for k in range(end):
        t = sig[k]
        if k > 0:
            x = x + math.sqrt(t * t - boundary * boundary) * noise_fn(x)
        x = consistency_output(x, denoise(x, t), t, boundary)
        if callback is not None:
            callback(k, x, boundary, k + 1)
    return x, end, sig[-1] if max_nfe is None else boundary


@dataclass(frozen=True)
class Solver:
    """A solver and what it is: `evaluations_per_step` network evaluations per interval of the sigma
    array, except that a step to sigma = 0 costs `step_to_zero` (one: Heun's last step is Euler;
    none for the consistency sampler, whose last level is its boundary); `tuned_models_only`: it
    samples consistency-tuned models only; `tune_default`: among `lowdiff tune`'s default solvers;
    `flow_ode`: valid on the flow ODE (rectified-flow models; see the module's docstring).
    Registering one in SOLVERS is all it takes to appear in the commands' choices and help and in
    the tuner's starts."""
    name: str
    sample: Callable
    evaluations_per_step: int
    description: str
    step_to_zero: int = 1
    tuned_models_only: bool = False
    tune_default: bool = False
    flow_ode: bool = True

    def __call__(self, *args, **kwargs):
        return self.sample(*args, **kwargs)

    def nfe(self, sigmas: torch.Tensor) -> int:
        """Evaluations to integrate over the whole array `sigmas`."""
        steps, to_zero = len(sigmas) - 1, float(sigmas[-1]) == 0
        return self.evaluations_per_step * steps - (self.evaluations_per_step - self.step_to_zero if to_zero else 0)

    @property
    def few_step(self) -> bool:
        """One evaluation per step on any model: the family of the tuner's few-step starts."""
        return self.evaluations_per_step == 1 and not self.tuned_models_only


SOLVERS = {s.name: s for s in (
    Solver("heun", sample_heun, 2, "EDM's 2nd-order Heun (2 evaluations per step)", tune_default=True),
    Solver("euler", sample_euler, 1, "1st-order Euler"),
    Solver("dpmpp2m", sample_dpmpp_2m, 1, "DPM-Solver++(2M), 2nd-order multistep", tune_default=True),
    Solver("dpmpp3m", sample_dpmpp_3m, 1, "DPM-Solver++(3M), 3rd-order multistep"),
    Solver("ipndm", sample_ipndm, 1, "iPNDM, up to 4th-order Adams-Bashforth multistep", tune_default=True),
    Solver("consistency", sample_consistency, 1, "multistep consistency sampling, one jump to the stage's end per "
           "evaluation (consistency-tuned models only)", step_to_zero=0, tuned_models_only=True,
           flow_ode=False),
)}


def few_step_solvers(names) -> list[str]:
    """Those of the solvers `names` that make few-step plans (`Solver.few_step`), in the given order."""
    return [n for n in names if n in SOLVERS and SOLVERS[n].few_step]


def tune_defaults() -> tuple[str, ...]:
    """The solvers `lowdiff tune` tries unless told otherwise."""
    return tuple(n for n, s in SOLVERS.items() if s.tune_default)


def flow_solvers() -> tuple[str, ...]:
    """The solvers valid on the flow ODE (`Solver.flow_ode`)."""
    return tuple(n for n, s in SOLVERS.items() if s.flow_ode)


def flow_solvers_text() -> str:
    """What the commands' help says of the flow ODE."""
    return f"valid on the flow ODE (rectified-flow models): {', '.join(flow_solvers())}"
