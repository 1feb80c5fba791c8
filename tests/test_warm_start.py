"""Warm-started stages (`start='upsampled'`): a stage starts from the stage below's output,
re-noised to its sigma_max, instead of pure noise."""
import pytest
import torch

from conftest import tiny_dit_preset, tiny_preset
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.precond import EDM, Flow
from lowdiff.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(torch.nn.Module):
    """A denoiser that remembers the condition each resolution was first given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.conds = model, {}

    def forward(self, x, sigma, labels=None, cond=None, sigma_cond=None):
        self.conds.setdefault(x.shape[-1], cond)
        return self.model(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)


def _model(preset):
    torch.manual_seed(0)
    return Denoiser.from_preset(preset).eval()


def test_tiny_sigma_max_returns_the_upsampled_condition():
    preset = tiny_preset()
    # 16x16 runs its whole schedule (stops at sigma 0.01); 32x32 starts just above it
    plan = preset.stages.replace(1, nfe=6).replace(2, start="upsampled", sigma_max=0.012, sigma_min=0.011, steps=2)
    preset.check_plan(plan)
    model = Recorder(_model(preset))
    out = sample_cascade(model, plan, PerImageGenerator([0, 1]), channels=1)
    cond = model.conds[32]
    assert out.stages[2].start == "upsampled" and out.stages[2].sigma_start == pytest.approx(0.012)
    assert (out.images - cond).abs().max() < 0.05 * cond.abs().max()
    from_noise = sample_cascade(_model(preset), plan.replace(2, start="noise"), PerImageGenerator([0, 1]), channels=1)
    assert (from_noise.images - cond).abs().max() > 0.2 * cond.abs().max()     # pure noise at 0.012 is not the cond


def test_warm_start_is_deterministic_per_seed_and_batch_independent():
    preset = tiny_preset()
    plan = preset.stages.replace(2, start="upsampled", sigma_max=3.0)
    model = _model(preset)
    both = sample_cascade(model, plan, PerImageGenerator([5, 6]), channels=1).images
    again = sample_cascade(model, plan, PerImageGenerator([5, 6]), channels=1).images
    alone = sample_cascade(model, plan, PerImageGenerator([6]), channels=1).images
    assert torch.equal(both, again) and torch.allclose(both[1:], alone, atol=1e-5)
    cold = sample_cascade(model, preset.stages, PerImageGenerator([5, 6]), channels=1).images
    assert not torch.allclose(both, cold)


def test_renoising_reaches_the_stage_noise_level():
    """EDM: the fresh noise tops the noise handed over up to sigma; flow: scale, then noise."""
    n = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    prev_noise = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = EDM().renoise(0.3 * prev_noise, 0.3, 2.0, n)                                # y = 0
    assert x.std().item() == pytest.approx(2.0, rel=0.01)
    y = torch.ones_like(n)
    x = Flow().renoise(0.8 * y + 0.2 * prev_noise, 0.2, 0.6, n)                     # (1 - s) y + s n
    assert x.mean().item() == pytest.approx(0.4, abs=0.01) and x.std().item() == pytest.approx(0.6, rel=0.01)


def test_flow_stage_warm_starts_on_its_own_time_axis():
    preset = tiny_dit_preset()
    with pytest.raises(ConfigError, match="sigma_max must be 1 unless it starts from the stage below"):
        preset.check_plan(preset.stages.replace(1, sigma_max=0.5))
    with pytest.raises(ConfigError, match="must lie above the noise level the 4x4 stage hands over"):
        preset.check_plan(preset.stages.replace(1, start="upsampled", sigma_max=0.5))
    plan = preset.stages.replace(0, nfe=5).replace(1, start="upsampled", sigma_max=0.5)
    preset.check_plan(plan)
    out = sample_cascade(_model(preset), plan, PerImageGenerator([0, 1]), channels=4,
                         class_labels=torch.eye(10)[[0, 1]], precond=preset.precond)
    assert out.stages[1].sigma_start == pytest.approx(0.5) and out.stages[0].truncation_sigma < 0.5
    assert torch.isfinite(out.images).all()
