"""A state handed to the final stage in place of the stages below (`sample_cascade(handed_over=)`):
the oracle condition of benchmarks/latent_diagnosis.py. Handing over the cascade's own state gives
the cascade's images; the final stage keeps each seed's noise; the lower stages are not run."""
import pytest
import torch

from conftest import tiny_dit_preset, tiny_preset
from lowdiff.diffusion import pyramid
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(torch.nn.Module):
    """A denoiser that records the resolutions it evaluates and the condition each first gets."""

    def __init__(self, model):
        super().__init__()
        self.model, self.conds, self.calls = model, {}, []

    def forward(self, x, sigma, labels=None, cond=None, sigma_cond=None):
        self.calls.append(x.shape[-1])
        self.conds.setdefault(x.shape[-1], (cond, sigma_cond))
        return self.model(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)


def _model(preset):
    torch.manual_seed(0)
    model = Denoiser.from_preset(preset)
    with torch.no_grad():                          # a fresh DiT outputs exactly 0: perturb its zero layers
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("make", [tiny_dit_preset, tiny_preset], ids=["flow-4-8", "edm-8-16-32"])
def test_handing_over_the_cascades_own_state_gives_its_images(make):
    preset = make()
    plan, labels = preset.stages, torch.eye(10)[:3] if preset.network.label_dim else None
    channels, top = preset.network.in_channels, plan[-1].resolution
    rec = Recorder(_model(preset))
    full = sample_cascade(rec, plan, PerImageGenerator([3, 4, 5]), channels, labels, precond=preset.precond)
    cond, sigma_cond = rec.conds[top]
    own = pyramid.downsample(cond, plan[-2].resolution)            # the state the stage below handed over
    seen = []

    def handed_over(noise, sigma):
        seen.append((tuple(noise.shape), sigma))
        return own

    rec.calls.clear()
    given = sample_cascade(rec, plan, PerImageGenerator([3, 4, 5]), channels, labels, precond=preset.precond,
                           handed_over=handed_over)
    assert torch.equal(given.images, full.images)
    assert seen == [((3, channels, plan[-2].resolution, plan[-2].resolution), plan.truncation_sigma(len(plan) - 2))]
    assert sigma_cond[0].item() == pytest.approx(seen[0][1])
    assert set(rec.calls) == {top}                                   # the lower stages were not run
    assert [s.nfe for s in given.stages] == [0] * (len(plan) - 1) + [full.stages[-1].nfe]


def test_an_oracle_condition_is_per_seed_and_steers_the_final_stage():
    """Real low-resolution data perturbed to the truncation level with each seed's own noise, as
    training perturbs its conditions (lowdiff/diffusion/loss.py, `truncation_augment`)."""
    preset = tiny_dit_preset()
    model, plan, labels = _model(preset), preset.stages, torch.eye(10)[[1, 7]]
    data = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))

    def sample(seeds, rows, source=data):
        return sample_cascade(model, plan, PerImageGenerator(seeds), 4, labels[rows], precond=preset.precond,
                              handed_over=lambda n, s: preset.precond.perturb(source[rows], s, n)).images

    both = sample([8, 9], [0, 1])
    assert both.shape == (2, 4, 8, 8) and torch.isfinite(both).all()
    assert torch.equal(both, sample([8, 9], [0, 1]))                                # deterministic
    assert torch.allclose(both[1:], sample([9], [1]), atol=1e-5)                    # per seed, not per batch
    assert not torch.allclose(both, sample([10, 11], [0, 1]))                       # the seed's own noise
    assert not torch.allclose(both, sample([8, 9], [0, 1], source=data.flip(0)))    # the condition counts
