"""Preconditioning, the training noise distributions and the loss terms (EDM, Karras et al.
2022, Table 1): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

One class per formulation (VP, VE, EDM, Flow), each holding its four coefficients, how it
perturbs clean data, its training distribution p(sigma) and its loss term, so that the
loss and the denoiser cannot disagree (as k-diffusion's `Denoiser.loss` sits beside its
scalings).

- VP / VE / EDM: x = y + sigma n; loss lambda(sigma) |D - y|^2 summed over pixels
  (EDM's loss.py form, lambda = 1 / c_out^2).
- Flow (rectified flow / linear path, SiT and LightningDiT): the noise level is
  sigma = 1 - t on x = (1 - sigma) y + sigma n, the network F predicts the velocity
  u = y - n at time c_noise = t, and D = x + sigma F is the data estimate, so
  c_skip = c_in = 1 and c_out = sigma. With D in this form the EDM solvers' Euler step in
  sigma, x + (sigma' - sigma)(x - D)/sigma = x + (t' - t) F, is the flow's Euler step in t.
  Training draws t from the logit-normal distribution, t = sigmoid(z), z ~ N(0, 1) (SD3's
  lognorm(0, 1), symmetric, so sigma has the same law); the loss is the velocity MSE averaged
  over C, H, W, plus LightningDiT's 1 - cos(v, u) over channels when its `cosine` is on.

Every question about a formulation is asked of its object: its `kind`, the `schedule` its models
sample with, its `sampling_range`, the noise of a warm start (`renoise`) and its loss term.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass(frozen=True)
class Preconditioning:
    """The shared interface; subclasses set the coefficients and the training distribution.

    In a preset or config.json a preconditioning is its kind, `"edm"`, or its kind with settings,
    `{"kind": "edm", "sigma_data": 0.5}` (`preconditioning_from` / `to_config`)."""
    kind = ""
    schedule = "edm"                     # the stage schedule its models sample with (lowdiff/diffusion/plan.py)
    additive_noise = True                # x = y + sigma n (`perturb`), the form consistency tuning assumes
    sampling_range = (0.002, 80.0)       # the noise levels its models are sampled over (EDM Sec. 5)

    def to_config(self) -> str | dict:
        """The kind alone when every setting is the default (the form config files have always had),
        else {"kind": ..., settings...}."""
        changed = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default}
        return {"kind": self.kind, **changed} if changed else self.kind

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) for sigma of shape (N, 1, 1, 1)."""
        raise NotImplementedError

    def perturb(self, y: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The noisy input at level sigma."""
        return y + sigma * noise

    def renoise(self, x: torch.Tensor, sigma_below: float, sigma: float, noise: torch.Tensor) -> torch.Tensor:
        """A state at noise level `sigma_below` taken to `sigma` (> sigma_below) with fresh unit noise
        `noise` (a warm start, lowdiff/diffusion/cascade.py): for x = y + sigma n the fresh noise has
        std sqrt(sigma^2 - sigma_below^2)."""
        return self._renoise(x, 1.0, sigma_below, sigma, noise)

    @staticmethod
    def _renoise(x, scale: float, sigma_below: float, sigma: float, noise):
        """scale x + sqrt(sigma^2 - (scale sigma_below)^2) noise: the state scaled, then noised to sigma."""
        return scale * x + math.sqrt(max(sigma ** 2 - (scale * sigma_below) ** 2, 0.0)) * noise

    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = 1 / c_out(sigma)^2: unit-weighted network-output error."""
        return 1 / sigma ** 2

    def loss(self, model, x, sigma, y, noise, class_labels=None, cond=None, sigma_cond=None,
             augment_labels=None) -> torch.Tensor:
        """Per-sample loss of `model` (a Denoiser) on the noisy x = perturb(y, sigma, noise):
        lambda(sigma) |D(x; sigma) - y|^2 summed over C, H, W."""
        denoised = model(x, sigma, class_labels, cond=cond, sigma_cond=sigma_cond, augment_labels=augment_labels)
        return (self.loss_weight(sigma) * (denoised.float() - y) ** 2).sum(dim=(1, 2, 3))


@dataclass(frozen=True)
class VP(Preconditioning):
    """Song et al. 2021's variance-preserving formulation, EDM's VPPrecond."""
    kind = "vp"
    sampling_range = (0.002, 80.0)       # EDM samples its VP models over the same range (Table 1)
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000
    epsilon_t: float = 1e-5

    def sigma_of_t(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def t_of_sigma(self, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        return torch.ones_like(sigma), -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.t_of_sigma(sigma)

    def sample_sigma(self, n, generator=None, device=None):
        u = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        return self.sigma_of_t(1 + u * (self.epsilon_t - 1))


@dataclass(frozen=True)
class VE(Preconditioning):
    """Song et al. 2021's variance-exploding formulation, EDM's VEPrecond."""
    kind = "ve"
    sampling_range = (0.002, 100.0)
    sigma_min: float = 0.02
    sigma_max: float = 100.0

    def coefficients(self, sigma):
        one = torch.ones_like(sigma)
        return one, sigma, one, (0.5 * sigma).log()

    def sample_sigma(self, n, generator=None, device=None):
        u = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u


@dataclass(frozen=True)
class EDM(Preconditioning):
    """Karras et al. 2022's preconditioning (EDMPrecond, Table 1) and log-normal p(sigma)."""
    kind = "edm"
    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2

    def coefficients(self, sigma):
        sd = self.sigma_data
        return (sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt(),
                1 / (sd ** 2 + sigma ** 2).sqrt(), sigma.log() / 4)

    def sample_sigma(self, n, generator=None, device=None):
        # One uniform draw, unused, before the normal one: the random stream every EDM-preconditioned
        # run (the bundled models among them) was trained with, so recorded commands stay bit-exact.
        torch.rand(n, 1, 1, 1, generator=generator, device=device)
        z = torch.randn(n, 1, 1, 1, generator=generator, device=device)
        return (z * self.P_std + self.P_mean).exp()

    def loss_weight(self, sigma):
        sd = self.sigma_data
        return (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2


@dataclass(frozen=True)
class Flow(Preconditioning):
    """Rectified flow on x = (1 - sigma) y + sigma n; logit(t) ~ N(mean, std^2); `cosine` adds
    LightningDiT's 1 - cos(v, u) over channels to the loss."""
    kind = "flow"
    schedule = "flow"
    additive_noise = False
    sampling_range = (0.0, 1.0)          # sigma = 1 - t
    mean: float = 0.0
    std: float = 1.0
    cosine: bool = False

    def coefficients(self, sigma):
        one = torch.ones_like(sigma)
        return one, sigma, one, 1 - sigma

    def perturb(self, y, sigma, noise):
        return (1 - sigma) * y + sigma * noise

    def renoise(self, x, sigma_below, sigma, noise):
        """On the path x = (1 - sigma) y + sigma n the state is first scaled by
        (1 - sigma) / (1 - sigma_below), then noised to sigma."""
        return self._renoise(x, (1 - sigma) / (1 - sigma_below), sigma_below, sigma, noise)

    def sample_sigma(self, n, generator=None, device=None):
        z = torch.randn(n, 1, 1, 1, generator=generator, device=device)
        return torch.sigmoid(-(z * self.std + self.mean))                 # sigma = 1 - sigmoid(logit t)

    def loss(self, model, x, sigma, y, noise, class_labels=None, cond=None, sigma_cond=None, augment_labels=None):
        """Velocity MSE over C, H, W against u = y - n (+ 1 - cos(v, u) over channels)."""
        v = model.network_output(x, sigma, class_labels, cond=cond, sigma_cond=sigma_cond,
                                 augment_labels=augment_labels)
        return velocity_loss(v, y - noise, self.cosine)


def velocity_loss(v: torch.Tensor, u: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Per-sample mean squared error over C, H, W, plus 1 - cos(v, u) over channels averaged
    over positions when `cosine` (LightningDiT's equal-weight sum)."""
    loss = (v - u).pow(2).mean(dim=(1, 2, 3))
    if cosine:
        loss = loss + (1 - F.cosine_similarity(v, u, dim=1)).mean(dim=(1, 2))
    return loss


def consistency_output(x: torch.Tensor, denoised: torch.Tensor, sigma, boundary) -> torch.Tensor:
    """The consistency function of a stage that ends at noise level `boundary` (s), from the
    denoiser's output D(x; sigma) at t = `sigma` >= s, for x = y + t n:

        f_s(x, t) = c_skip x + c_out D(x; t),   c_skip = s / t,   c_out = 1 - s / t.

    It is the probability-flow ODE's exact solution from t to s when D is the data's conditional
    mean along the trajectory (the first-order DDIM / DPM-Solver++(1) step, solvers.py), the
    parametrisation of Consistency Trajectory Models (Kim et al. 2023, Sec. 3: G(x_t, t, s) =
    (s / t) x_t + (1 - s / t) g) with the end fixed at s. The boundary condition of Song et al.
    2023 (Sec. 3, Eq. 3-5: c_skip(eps) = 1, c_out(eps) = 0) is built in: at t = s, c_skip = 1 and
    c_out = 0 exactly in floating point, so f_s(x, s) = x. With s = EDM's sigma_min and D's EDM
    preconditioning, c_skip^f = s/t + (1 - s/t) c_skip^D, c_out^f = (1 - s/t) c_out^D."""
    ratio = torch.as_tensor(boundary, dtype=x.dtype, device=x.device) / torch.as_tensor(sigma, dtype=x.dtype,
                                                                                       device=x.device)
    return ratio * x + (1 - ratio) * denoised


PRECONDITIONINGS = {p.kind: p for p in (VP, VE, EDM, Flow)}


def preconditioning_from(spec: str | dict | Preconditioning, where: str = "precond") -> Preconditioning:
    """A preconditioning from its kind ('edm'), its config ({"kind": "edm", "sigma_data": 0.5}) or itself."""
    from ..fields import from_dict
    if isinstance(spec, Preconditioning):
        return spec
    settings = dict(spec) if isinstance(spec, dict) else {}
    kind = settings.pop("kind", None) if isinstance(spec, dict) else spec
    if kind not in PRECONDITIONINGS:
        raise ConfigError(f"{where}: unknown preconditioning {kind!r}: choose {', '.join(PRECONDITIONINGS)}")
    precond = from_dict(PRECONDITIONINGS[kind], settings, where)
    for f in dataclasses.fields(precond):
        if f.type != "bool" and not math.isfinite(getattr(precond, f.name)):
            raise ConfigError(f"{where}.{f.name} must be a finite number, got {getattr(precond, f.name)}")
    return precond
