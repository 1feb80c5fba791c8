"""Preconditioning coefficients and the multi-resolution loss with truncation augmentation."""
import math

import pytest
import torch

from lowdiff.diffusion import pyramid
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.loss import BatchNoise, multires_loss
from lowdiff.diffusion.precond import get_preconditioning


def test_vp_coefficients_and_ranges_match_edm():
    vp = get_preconditioning("vp")
    lo, hi = vp.sigma_range
    assert lo == pytest.approx(0.001, abs=3e-5) and hi == pytest.approx(152.17, abs=0.01)
    s = torch.tensor([80.0, 0.002]).reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = vp.coefficients(s)
    assert c_noise.flatten()[0].item() == pytest.approx(932.6, abs=0.2)
    assert c_noise.flatten()[1].item() == pytest.approx(0.040, abs=1e-3)
    assert torch.allclose(c_out, -s) and torch.allclose(c_in, 1 / (s ** 2 + 1).sqrt())
    assert torch.allclose(vp.vp_sigma_inv(vp.vp_sigma(torch.tensor([0.3, 0.9]))), torch.tensor([0.3, 0.9]))


def test_edm_and_ve_coefficients():
    s = torch.tensor([0.5]).reshape(1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = get_preconditioning("edm").coefficients(s)
    assert (c_skip.item(), c_out.item(), c_in.item()) == pytest.approx((0.5, 0.5 / math.sqrt(2), 1 / math.sqrt(0.5)))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)
    _, c_out, _, c_noise = get_preconditioning("ve").coefficients(s)
    assert c_out.item() == 0.5 and c_noise.item() == pytest.approx(math.log(0.25))
    w = get_preconditioning("edm").loss_weight(s)
    assert w.item() == pytest.approx((0.25 + 0.25) / (0.25 * 0.25))


def test_training_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    edm = get_preconditioning("edm").sample_sigma(20000, g).log()
    assert edm.mean().item() == pytest.approx(-1.2, abs=0.03) and edm.std().item() == pytest.approx(1.2, abs=0.03)
    vp = get_preconditioning("vp").sample_sigma(20000, g)
    assert vp.min() > 0.0009 and vp.max() < 152.2


def test_pyramid_down_up():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    low = pyramid.downsample(x, 2)
    assert torch.equal(low, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = pyramid.upsample(low, 4)
    assert torch.equal(pyramid.downsample(up, 2), low)             # down(up(x)) = x
    noise = pyramid.upsample(torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0)), 512)
    assert noise.std().item() == pytest.approx(1.0, abs=0.01)       # upsampled noise keeps its level
    with pytest.raises(ValueError, match="power of two"):
        pyramid.downsample(x, 3)


def test_single_stage_loss_is_edm_loss(tiny):
    """One stage: L = mean_batch sum_pixels lambda(sigma) (D(y + sigma n) - y)^2."""
    torch.manual_seed(0)
    model = Denoiser(tiny(stages=(32,)))
    y = torch.rand(4, 1, 32, 32) * 2 - 1
    total, per = multires_loss(model, y, noise=BatchNoise(torch.Generator().manual_seed(5), 4))
    g = torch.Generator().manual_seed(5)
    sigma = model.precond.sample_sigma(4, g)
    n = torch.randn(y.shape, generator=g) * sigma
    assert torch.equal(BatchNoise(torch.Generator().manual_seed(5), 4, slice(1, 3)).sigma(model.precond), sigma[1:3])
    expect = (model.precond.loss_weight(sigma) * (model(y + n, sigma) - y) ** 2).sum((1, 2, 3)).mean()
    assert torch.allclose(total, expect) and set(per) == {32}


def test_multires_loss_conditions_on_independently_noised_lower_resolution(tiny):
    """Each higher resolution sees upsample(downsample(y) + sigma_c n') with its own sigma_c."""
    torch.manual_seed(0)
    model = Denoiser(tiny())
    calls = []
    original = model.forward

    def spy(x, sigma, labels=None, cond=None, sigma_cond=None, augment_labels=None):
        calls.append((x.shape[-1], sigma.flatten().clone(), cond, None if sigma_cond is None else
                      sigma_cond.flatten().clone()))
        return original(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)

    model.forward = spy
    y = torch.rand(3, 1, 32, 32) * 2 - 1
    total, per = multires_loss(model, y, weights={8: 0.5}, noise=BatchNoise(torch.Generator().manual_seed(1), 3))
    assert [c[0] for c in calls] == [8, 16, 32] and calls[0][2] is None
    for (r, sigma, cond, sigma_c), low_r in zip(calls[1:], (8, 16)):
        assert not torch.allclose(sigma, sigma_c)                     # independent noise levels
        low = pyramid.downsample(cond, low_r)                          # nearest-up then box-down = identity
        residual = (low - pyramid.downsample(y, low_r)) / sigma_c.reshape(-1, 1, 1, 1)
        assert residual.std().item() == pytest.approx(1.0, abs=0.35)   # noise of level sigma_c
    assert torch.allclose(total, 0.5 * per[8] + per[16] + per[32])


def test_label_dropout_draws_from_the_batch_generator():
    from lowdiff.diffusion.loss import BatchNoise, drop_labels
    labels = torch.eye(4)[torch.arange(64) % 4]

    def dropped(rows):
        return drop_labels(labels[rows], 0.5, BatchNoise(torch.Generator().manual_seed(3), 64, rows))
    full = dropped(slice(None))
    assert 10 < int((full.sum(1) == 0).sum()) < 54                   # about half become the null class
    assert torch.equal(torch.cat([dropped(slice(0, 32)), dropped(slice(32, 64))]), full)   # same on 2 ranks
    assert drop_labels(labels, 0.0, BatchNoise(None, 64)) is labels
