"""Preconditioning coefficients and the multi-resolution loss with truncation augmentation."""
import dataclasses
import math

import pytest
import torch

from lowdiff.diffusion import pyramid
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.diffusion.loss import BatchNoise, multires_loss
from lowdiff.diffusion.precond import preconditioning_from
from lowdiff.errors import ConfigError


def test_vp_coefficients_and_ranges_match_edm():
    vp = preconditioning_from("vp")
    lo, hi = vp.sigma_of_t(vp.epsilon_t).item(), vp.sigma_of_t(1.0).item()       # the levels it trains at
    assert lo == pytest.approx(0.001, abs=3e-5) and hi == pytest.approx(152.17, abs=0.01)
    s = torch.tensor([80.0, 0.002]).reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = vp.coefficients(s)
    assert c_noise.flatten()[0].item() == pytest.approx(932.6, abs=0.2)
    assert c_noise.flatten()[1].item() == pytest.approx(0.040, abs=1e-3)
    assert torch.allclose(c_out, -s) and torch.allclose(c_in, 1 / (s ** 2 + 1).sqrt())
    assert torch.allclose(vp.t_of_sigma(vp.sigma_of_t(torch.tensor([0.3, 0.9]))), torch.tensor([0.3, 0.9]))


def test_edm_and_ve_coefficients():
    s = torch.tensor([0.5]).reshape(1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = preconditioning_from("edm").coefficients(s)
    assert (c_skip.item(), c_out.item(), c_in.item()) == pytest.approx((0.5, 0.5 / math.sqrt(2), 1 / math.sqrt(0.5)))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)
    _, c_out, _, c_noise = preconditioning_from("ve").coefficients(s)
    assert c_out.item() == 0.5 and c_noise.item() == pytest.approx(math.log(0.25))
    w = preconditioning_from("edm").loss_weight(s)
    assert w.item() == pytest.approx((0.25 + 0.25) / (0.25 * 0.25))


def test_training_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    edm = preconditioning_from("edm").sample_sigma(20000, g).log()
    assert edm.mean().item() == pytest.approx(-1.2, abs=0.03) and edm.std().item() == pytest.approx(1.2, abs=0.03)
    vp = preconditioning_from("vp").sample_sigma(20000, g)
    assert vp.min() > 0.0009 and vp.max() < 152.2


@pytest.mark.parametrize("kind", ["vp", "ve", "edm", "flow"])
def test_training_noise_levels_keep_their_random_stream(kind):
    """The draws behind p(sigma) are part of every run's reproducibility: VP, VE and EDM take
    one uniform draw (EDM's unused) and EDM a normal one after it, flow one normal draw (the
    stream of the runs behind the bundled models)."""
    precond = preconditioning_from(kind)
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    sigma = precond.sample_sigma(5, g)
    u = torch.rand(5, 1, 1, 1, generator=ref) if kind != "flow" else None
    z = torch.randn(5, 1, 1, 1, generator=ref) if kind in ("edm", "flow") else None
    expect = {"vp": lambda: precond.sigma_of_t(1 + u * (precond.epsilon_t - 1)),
              "ve": lambda: precond.sigma_min * (precond.sigma_max / precond.sigma_min) ** u,
              "edm": lambda: (z * precond.P_std + precond.P_mean).exp(),
              "flow": lambda: torch.sigmoid(-z)}[kind]()
    assert torch.allclose(sigma, expect) and torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=ref))


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
    model = Denoiser.from_preset(tiny(stages=(32,)))
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
    model = Denoiser.from_preset(tiny())
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


def _perturbed(model, scale=0.05):
    """Random non-zero weights everywhere (zero-initialised heads would make every output 0)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * scale)
    return model


def test_flow_loss_value_matches_the_velocity_objective():
    """One flow stage: L = mean_batch [mean_CHW (v - (y - n))^2 + mean_HW (1 - cos_C(v, y - n))],
    with x = (1 - sigma) y + sigma n and v the network's output at x."""
    from conftest import tiny_dit_preset
    torch.manual_seed(0)
    preset = tiny_dit_preset(stages=(8,))
    assert preset.precond.cosine                                      # the flow presets' objective has the term
    model = _perturbed(Denoiser.from_preset(preset))
    y, labels = torch.randn(4, 4, 8, 8), torch.eye(10)[:4]
    total, per = multires_loss(model, y, labels, noise=BatchNoise(torch.Generator().manual_seed(7), 4))
    g = torch.Generator().manual_seed(7)
    sigma = torch.sigmoid(-torch.randn(4, 1, 1, 1, generator=g))      # logit-normal t, sigma = 1 - t
    n = torch.randn(y.shape, generator=g)
    v = model.network_output((1 - sigma) * y + sigma * n, sigma, labels)
    u = y - n
    cos = (v * u).sum(1) / (v.norm(dim=1) * u.norm(dim=1))
    expect = ((v - u) ** 2).mean((1, 2, 3)) + (1 - cos).mean((1, 2))
    assert torch.allclose(total, expect.mean(), rtol=1e-5) and set(per) == {8}
    model.precond = dataclasses.replace(model.precond, cosine=False)
    plain, _ = multires_loss(model, y, labels, noise=BatchNoise(torch.Generator().manual_seed(7), 4))
    assert torch.allclose(plain, ((v - u) ** 2).mean((1, 2, 3)).mean(), rtol=1e-5)
    assert plain.item() < 20                                          # not the EDM form on a flow model (~300)


@pytest.mark.parametrize("kind", ["vp", "ve", "edm", "flow"])
def test_the_loss_uses_each_objectives_own_perturbation_and_term(tiny, kind):
    """For every preconditioning, both stages of a cascade see P.perturb(y_r) and the condition
    P.perturb(y_{r/2}) at an independent level, and the loss is that objective's term."""
    torch.manual_seed(0)
    p = tiny(stages=(16, 32))
    p.precond = kind
    if kind == "flow":                       # flow stages: sigma in [0, 1] on the flow schedule
        p.stages = p.stages.replace(0, schedule="flow", solver="euler", sigma_min=0.0, sigma_max=1.0, shift=1.0)
        p.stages = p.stages.replace(1, schedule="flow", solver="euler", sigma_min=0.0, sigma_max=1.0, shift=1.0)
    model = _perturbed(Denoiser.from_preset(p))
    precond = model.precond
    y = torch.rand(3, 1, 32, 32) * 2 - 1
    total, per = multires_loss(model, y, noise=BatchNoise(torch.Generator().manual_seed(2), 3))
    g = torch.Generator().manual_seed(2)
    expect = {}
    for r in (16, 32):
        y_r = pyramid.downsample(y, r)
        sigma = precond.sample_sigma(3, g)
        n = torch.randn(y_r.shape, generator=g)
        x, kw = precond.perturb(y_r, sigma, n), {}
        if r == 32:
            low = pyramid.downsample(y, 16)
            sigma_c = precond.sample_sigma(3, g)
            kw = dict(cond=pyramid.upsample(precond.perturb(low, sigma_c, torch.randn(low.shape, generator=g)), 32),
                      sigma_cond=sigma_c)
        if kind == "flow":
            assert torch.allclose(x, (1 - sigma) * y_r + sigma * n)
            expect[r] = ((model.network_output(x, sigma, **kw) - (y_r - n)) ** 2).mean((1, 2, 3)).mean()
        else:
            assert torch.allclose(x, y_r + sigma * n)
            expect[r] = (precond.loss_weight(sigma) * (model(x, sigma, **kw) - y_r) ** 2).sum((1, 2, 3)).mean()
    for r in (16, 32):
        assert torch.allclose(per[r], expect[r], rtol=1e-5), (kind, r)
    assert torch.allclose(total, per[16] + per[32])


def test_the_preconditioning_is_a_configured_object_that_reads_bare_kinds(tiny):
    """A preset's precond is its kind ("edm", as every config.json so far has it) or its kind with
    settings; settings reach the denoiser, defaults write back as the bare kind, and plans are
    validated against the preconditioning's own range and kind."""
    import json

    from lowdiff.config import Preset
    from lowdiff.diffusion.denoiser import Denoiser
    from lowdiff.errors import ConfigError
    p = tiny()
    assert p.precond.kind == "edm" and json.loads(p.to_json())["precond"] == "edm"
    d = json.loads(p.to_json())
    d["precond"] = {"kind": "edm", "sigma_data": 0.25}
    q = Preset.from_dict(d)
    assert q.precond.sigma_data == 0.25 and json.loads(q.to_json())["precond"] == {"kind": "edm", "sigma_data": 0.25}
    c_skip = Denoiser.from_preset(q).precond.coefficients(torch.ones(1, 1, 1, 1))[0]
    assert torch.allclose(c_skip, torch.tensor(0.25 ** 2 / (1 + 0.25 ** 2)))
    for bad, message in (({"kind": "edm", "sigma_data": float("nan")}, "NaN"), ({"kind": "ddpm"}, "ddpm"),
                         ({"kind": "edm", "sigmadata": 1}, "sigmadata")):
        with pytest.raises(ConfigError, match=message):
            Preset.from_dict(dict(d, precond=bad))
    with pytest.raises(ConfigError, match=r"outside the noise levels of the edm preconditioning \(0.002, 80\]"):
        p.check_plan(p.stages.replace(2, start="upsampled", sigma_max=200.0))


def test_configs_with_the_cosine_term_as_a_training_setting_still_load():
    """config.json files written when the cosine term was `train.cosine_loss` load with it on the flow
    preconditioning (`Flow.cosine`), and write it back there; on another preconditioning it is refused."""
    from conftest import tiny_dit_preset, tiny_preset

    from lowdiff.config import Preset
    d = tiny_dit_preset().to_dict()
    assert d["precond"] == {"kind": "flow", "cosine": True} and "cosine_loss" not in d["train"]
    old = {**d, "precond": "flow", "train": {**d["train"], "cosine_loss": True}}
    assert Preset.from_dict(old).precond.cosine
    assert not Preset.from_dict({**old, "train": {**d["train"], "cosine_loss": False}}).precond.cosine
    edm = tiny_preset().to_dict()
    with pytest.raises(ConfigError, match="cosine_loss belongs to the flow objective"):
        Preset.from_dict({**edm, "train": {**edm["train"], "cosine_loss": True}})
