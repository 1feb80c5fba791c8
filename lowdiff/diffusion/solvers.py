"""ODE solvers as small functions over an explicit sigma array (k-diffusion style) and
EDM's noise-level discretisation (Karras et al. 2022, Eq. 5 and Algorithm 2): Euler, EDM's
Heun, and the multistep DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2).

`denoise(x, sigma)` is any callable returning D(x; sigma). A sigma array ending at 0
integrates to a clean sample; one ending at sigma > 0 stops there (truncation). `max_nfe`
stops the solver once that many evaluations are spent; when a single evaluation is left
for a step, that step is taken with Euler. Every solver returns (x, nfe, sigma_reached).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               append_zero: bool = True) -> torch.Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, float64."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    i = torch.arange(steps, dtype=torch.float64)
    ramp = i / max(steps - 1, 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


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
    if S_churn > 0 and noise_fn is None:
        noise_fn = torch.randn_like
    sig = [float(s) for s in sigmas]
    n_steps = len(sig) - 1
    budget = n_steps if max_nfe is None else min(max_nfe, n_steps)
    nfe, reached = 0, sig[0]
    prev = None                                                          # (D_{i-1}, lambda_{i-1})
    for i in range(budget):
        x, s = _churn(x, sig[i], i, n_steps, S_churn, S_min, S_max, S_noise, noise_fn)
        s_next = sig[i + 1]
        denoised = denoise(x, s)
        nfe += 1
        x = _dpmpp_step(x, s, s_next, denoised, prev)
        prev, reached = (denoised, -math.log(s)), s_next
        if callback is not None:
            callback(i, x, reached, nfe)
    return x, nfe, reached


def _dpmpp_step(x, s, s_next, denoised, prev):
    """One DPM-Solver++ step from s to s_next; second order when `prev` is given and s_next > 0."""
    if s_next == 0:
        return denoised                                                  # e^-h = 0: x_next = D
    lam, lam_next = -math.log(s), -math.log(s_next)
    h = lam_next - lam
    if prev is not None:
        d_prev, lam_prev = prev
        r = (lam - lam_prev) / h
        denoised = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * d_prev
    return (s_next / s) * x - math.expm1(-h) * denoised


SOLVERS = {"heun": sample_heun, "euler": sample_euler, "dpmpp2m": sample_dpmpp_2m}
