"""The SongUNet re-implementation: EDM's exact parameter counts, the paper's unified
counts, sub-network isolation and the EDM state-dict key map."""
import math

import pytest
import torch

from lowdiff.errors import ConfigError
from lowdiff.presets import get_preset
from lowdiff.diffusion.denoiser import Denoiser, count_parameters
from lowdiff.diffusion.loss import multires_loss
from lowdiff.info import describe, meta_denoiser
from lowdiff.nn.unet import UnifiedUNet, convert_edm_state_dict
from helpers import to_edm_layout


@pytest.mark.parametrize("name,count", [("edm-cifar10-uncond", 55_733_891), ("edm-cifar10-cond", 55_735_299),
                                        ("edm-ffhq64", 61_805_571)])
def test_edm_parameter_counts_exact(name, count):
    assert count_parameters(meta_denoiser(get_preset(name))) == count


@pytest.mark.parametrize("name,paper_m", [("cifar10-uncond", 55.77), ("ffhq64", 61.86),
                                          ("cifar10-uncond-2stage", 55.76), ("ffhq64-2stage", 61.82),
                                          ("cdm-cifar10-uncond-2stage", 93.89), ("cdm-ffhq64-2stage", 117.57)])
def test_lowdiff_parameter_counts_within_0_1_percent_of_paper(name, paper_m):
    n = count_parameters(meta_denoiser(get_preset(name)))
    assert abs(n / 1e6 - paper_m) / paper_m < 1e-3, n


def test_without_condition_noise_embedding_counts_match_paper_to_rounding():
    p = get_preset("cifar10-uncond")
    p.network.cond_noise_embedding = False
    assert round(count_parameters(meta_denoiser(p)) / 1e6, 2) == 55.77


def test_inner_core_sizes_match_spec():
    """Spec 1.6: the 16x16 sub-network of the CIFAR host has a 37,805,568-parameter core."""
    net = meta_denoiser(get_preset("cifar10-uncond")).nets["unified"]
    core16 = [n for n in net.subnetwork_parameters(16) if n.startswith(("enc.", "dec."))]
    params = dict(net.named_parameters())
    assert sum(params[n].numel() for n in core16) == 37_805_568


def test_info_reports_paper_stage_plans():
    info = describe("cifar10-uncond")
    assert info["nfe_per_stage"] == {8: 18, 16: 13, 32: 17}
    assert info["baseline"]["parameters"] == 55_733_891 and info["baseline"]["nfe"] == 35
    assert info["effective_nfe_flops"] == 22                     # the paper's effective NFE
    assert describe("ffhq64")["nfe_per_stage"] == {8: 22, 16: 23, 32: 23, 64: 39}
    assert describe("edm-ffhq64")["nfe_per_stage"] == {64: 79}


@pytest.mark.parametrize("r", [8, 16, 32])
def test_low_resolution_loss_touches_only_its_subnetwork(tiny, r):
    torch.manual_seed(0)
    model = Denoiser.from_preset(tiny())
    net = model.nets["unified"]
    x = torch.randn(2, 1, r, r)
    kw = {} if r == 8 else dict(cond=torch.randn(2, 1, r, r), sigma_cond=torch.tensor([0.5, 2.0]))
    model(x, torch.tensor([1.0, 3.0]), **kw).square().sum().backward()
    used = set(net.subnetwork_parameters(r))
    for name, p in net.named_parameters():
        touched = p.grad is not None and p.grad.abs().sum() > 0
        if name not in used:
            assert not touched, f"{name} got a gradient from the {r}x{r} loss"
    assert any(f"inputs.{r}x{r}" in n for n in used)
    if r < 32:
        assert not any(n.startswith("inputs.32x32") or "32x32_block" in n for n in used)


def test_forward_shapes_and_errors(tiny):
    model = Denoiser.from_preset(tiny(label_dim=3))
    labels = torch.eye(3)[[0, 2]]
    assert model(torch.randn(2, 1, 8, 8), 1.0, labels).shape == (2, 1, 8, 8)
    out = model(torch.randn(2, 1, 16, 16), 1.0, labels, cond=torch.randn(2, 1, 16, 16), sigma_cond=0.3)
    assert out.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="serves square resolutions"):
        model(torch.randn(2, 1, 4, 4), 1.0, labels)
    with pytest.raises(ValueError, match="pass cond"):
        model(torch.randn(2, 1, 16, 16), 1.0, labels)
    with pytest.raises(ValueError, match="class_labels"):
        model(torch.randn(2, 1, 8, 8), 1.0)


def test_cdm_has_independent_networks(tiny):
    model = Denoiser.from_preset(tiny(stages=(16, 32), unified=False))
    assert set(model.nets) == {"16x16", "32x32"}
    total, per = multires_loss(model, torch.rand(2, 1, 32, 32) * 2 - 1)
    total.backward()
    assert set(per) == {16, 32}
    assert all(p.grad is not None for p in model.parameters())


def test_bad_configs_are_rejected(tiny):
    p = tiny()
    p.stages[0].nfe = 99
    with pytest.raises(ConfigError, match="past the last step"):
        p.validate()
    p = tiny()
    p.stages[1].resolution = 24
    with pytest.raises(ConfigError, match="double"):
        p.validate()
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("cifar-11")


def test_edm_key_map_loads_an_edm_layout_state_dict(tiny):
    """Round trip through EDM's naming (model.-prefixed, stem `enc.RxR_conv`, head `aux_*`,
    resample_filter buffers) recovers our weights exactly."""
    p = tiny(stages=(32,))
    ours = UnifiedUNet(p.network).state_dict()
    edm = to_edm_layout(ours, 32)
    converted = convert_edm_state_dict(edm, 32)
    assert converted.keys() == ours.keys()
    UnifiedUNet(p.network).load_state_dict(converted)


@pytest.mark.parametrize("name", ["edm-cifar10-uncond", "edm-cifar10-cond", "edm-ffhq64"])
def test_paper_baselines_are_edm_preconditioned_and_edm_weights_give_edmprecond(name):
    """An EDM-layout state dict loaded into the baseline gives D(x; sigma) = c_skip x + c_out
    F(c_in x; c_noise) with EDMPrecond's c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(sd^2+s^2), c_noise = ln(s)/4, sd = 0.5, evaluated here (EDM Table 1). The
    network is the preset's, narrowed (model_channels 16, one block) to keep the test small."""
    import dataclasses
    preset = get_preset(name)
    assert preset.precond.kind == "edm" and describe(name)["precond"] == "edm"
    preset.network = dataclasses.replace(preset.network, model_channels=16, num_blocks=1)
    R = preset.network.img_resolution
    torch.manual_seed(0)
    source = UnifiedUNet(preset.network).eval()
    with torch.no_grad():                                   # non-trivial outputs (EDM zero-inits the last convs)
        for q in source.parameters():
            q.add_(torch.randn_like(q) * 0.02)
    model = Denoiser.from_preset(preset).eval()
    model.nets["unified"].load_state_dict(convert_edm_state_dict(to_edm_layout(source.state_dict(), R), R))
    x = torch.randn(3, 3, R, R) * 2
    labels = torch.eye(10)[:3] if preset.network.label_dim else None
    augment = torch.zeros(3, preset.network.augment_dim)
    for s in (0.002, 0.5, 80.0):
        sd = 0.5
        c_skip, c_out = sd ** 2 / (s ** 2 + sd ** 2), s * sd / math.sqrt(s ** 2 + sd ** 2)
        c_in, c_noise = 1 / math.sqrt(sd ** 2 + s ** 2), math.log(s) / 4
        with torch.no_grad():
            F_x = source(c_in * x, torch.full((3,), c_noise), class_labels=labels, augment_labels=augment)
            D = model(x, torch.full((3,), s), labels, augment_labels=augment)
        assert torch.allclose(D, c_skip * x + c_out * F_x, rtol=1e-5, atol=1e-5), s


def test_every_named_preset_validates_and_builds():
    from lowdiff.presets import PRESETS
    for name in PRESETS:
        preset = get_preset(name)
        preset.validate()
        assert count_parameters(meta_denoiser(preset)) > 0, name


def test_fashion_ablation_presets_are_configurations_of_one_host():
    """Table 6 / 8 ablations on Fashion: the two-stage unified net drops the 8x8 layers of the
    three-stage one; the CDM has one independent network per stage and no shared weights."""
    three = describe("lowdiff-fashion-tiny")
    two = describe("lowdiff-fashion-tiny-2stage")
    cdm = describe("cdm-fashion-tiny-2stage")
    assert two["resolutions"] == cdm["resolutions"] == [16, 32] and two["nfe_per_stage"] == {16: 19, 32: 17}
    assert two["parameters"] < three["parameters"] < cdm["parameters"]
    per_net = cdm["parameters_per_network"]
    assert sorted(per_net) == ["16x16", "32x32"] and sum(per_net.values()) == cdm["parameters"]


@pytest.mark.parametrize("make", ["unet", "dit"])
def test_a_denoiser_moved_to_float64_computes_in_float64_and_agrees_with_float32(make):
    """The networks compute in the dtype they are given (their embeddings too): a denoiser moved to
    float64 returns float64 that matches float32 to float32 rounding, with the condition and labels."""
    import copy

    from conftest import tiny_dit_preset, tiny_preset
    preset = tiny_preset(label_dim=10) if make == "unet" else tiny_dit_preset()
    torch.manual_seed(0)
    model = Denoiser.from_preset(preset).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    double = copy.deepcopy(model).double()
    r, low = preset.resolutions[-1], preset.resolutions[-2]
    c = preset.network.in_channels
    x = torch.randn(2, c, r, r) * 3
    cond = torch.nn.functional.interpolate(torch.randn(2, c, low, low), scale_factor=2)
    sigma, sigma_cond = torch.tensor([2.0, 0.5]), torch.tensor([0.3, 0.1])
    if make == "dit":
        sigma, sigma_cond = sigma / 4, sigma_cond
    labels = torch.eye(10)[[3, 7]]
    with torch.no_grad():
        single = model(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)
        wide = double(x.double(), sigma.double(), labels.double(), cond=cond.double(), sigma_cond=sigma_cond.double())
    assert single.dtype == torch.float32 and wide.dtype == torch.float64
    assert torch.allclose(wide.float(), single, rtol=1e-4, atol=1e-4 * single.abs().max().item())
    assert not torch.equal(wide.float(), single)                      # computed in float64, not float32
