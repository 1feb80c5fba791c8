"""The denoising-error probe of the latent cascade's final stage (benchmarks/latent_denoise.py): both
denoisers see the same noisy latents, and the condition reaches LowDiff's."""
import pytest
import torch

from helpers import bench_module, dit_cascade_from_baseline
from lowdiff.diffusion import pyramid

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def probe():
    yield from bench_module("latent_denoise")


def _pair():
    base, low = dit_cascade_from_baseline()
    return base.eval(), low.eval()


def _errors(probe, base, low):
    y = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    y_low = pyramid.downsample(y, 4)
    return probe.denoising_errors(low, base, low.precond, y, y_low, torch.eye(10)[:6], [0.2, 0.8], [0.8, 0.3],
                                  torch.Generator().manual_seed(0))


def test_a_cascade_started_from_its_baseline_denoises_exactly_as_well(probe):
    """At step 0 of `--init-from` the top stage ignores its condition: ratio 1 at every noise level."""
    base, low = _pair()
    rows = _errors(probe, base, low)
    assert [s for s, _, _ in rows] == [0.2, 0.8]
    for _, e_base, e_low in rows:
        assert e_base > 0
        assert e_low == pytest.approx([e_base, e_base], rel=1e-5)


def test_the_condition_reaches_the_cascade(probe):
    base, low = _pair()
    with torch.no_grad():                                   # switch the top stem's condition channels on
        stem = dict(low.nets["unified"].named_parameters())["x_embed.8x8.weight"]
        stem[:, 4:].normal_(0, 0.5)
    for _, e_base, e_low in _errors(probe, base, low):
        assert e_low[0] != pytest.approx(e_base, rel=1e-4)
        assert e_low[0] != pytest.approx(e_low[1], rel=1e-4)   # and its noise level matters
