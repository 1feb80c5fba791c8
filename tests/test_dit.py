"""The LightningDiT-style unified transformer and the flow objective: exact parameter
counts, positions as functions of the grid, RoPE, classifier-free guidance, the flow
sampler's equivalence with Euler in t, and sub-network isolation."""
import dataclasses
import math

import pytest
import torch
from conftest import tiny_dit_preset

from lowdiff.errors import ConfigError
from lowdiff.presets import get_preset
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser, count_parameters
from lowdiff.diffusion.guidance import Guided, guided
from lowdiff.diffusion.loss import multires_loss
from lowdiff.diffusion.plan import StagePlan
from lowdiff.diffusion.schedules import flow_sigmas, shift_time
from lowdiff.diffusion.solvers import sample_euler
from lowdiff.info import describe, meta_denoiser
from lowdiff.nn.dit import apply_rope, rope_angles, sincos_table


def perturbed(preset, seed=0):
    """A denoiser whose zero-initialised layers are perturbed (a fresh DiT outputs exactly 0)."""
    torch.manual_seed(seed)
    model = Denoiser.from_preset(preset)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_lightningdit_b1_count_is_the_papers():
    """Spec 1.4: 130,556,192 including the frozen 16x16 sin-cos table; 130,359,584 trainable."""
    model = meta_denoiser(get_preset("imagenet256-lightningdit-b1"))
    assert count_parameters(model) == 130_556_192
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 130_359_584


def test_unified_imagenet_count():
    """Paper Tab. 4: 131.86M. Ours adds per-resolution patch embeds and full final layers, the
    one-hot resolution embedding and the frozen 8x8 table: 131,864,128 (131.86M); the
    condition-noise embedding (DESIGN 1.1, 256x256 projection) adds 65,536."""
    assert count_parameters(meta_denoiser(get_preset("imagenet256"))) == 131_929_664
    p = get_preset("imagenet256")
    p.network.cond_noise_embedding = False
    n = count_parameters(meta_denoiser(p))
    assert n == 131_864_128 and round(n / 1e6, 2) == p.paper["params_m"]


def test_parameter_groups_match_spec():
    net = meta_denoiser(get_preset("imagenet256-lightningdit-b1")).nets["unified"]
    assert count_parameters(net.blocks[0]) == 10_630_912
    assert count_parameters(net.final["16x16"]) == 1_206_560
    assert count_parameters(net.t_embed) == 787_968 and net.label_embed.table.numel() == 768_768
    p = get_preset("imagenet256-lightningdit-b1")
    p.network.qk_norm = True
    assert count_parameters(meta_denoiser(p)) == 130_556_192 + 1_536


def test_positions_at_8x8_differ_from_16x16_only_by_grid_size():
    """Sin-cos table and RoPE angles are functions of the token's (row, column): the 8x8 grid
    is the top-left corner of the 16x16 one, and the model's tables are exactly these."""
    D, hd = 64, 16
    big, small = sincos_table(16, D).reshape(16, 16, D), sincos_table(8, D).reshape(8, 8, D)
    assert torch.equal(big[:8, :8], small)
    rb, rs = rope_angles(16, hd).reshape(16, 16, -1), rope_angles(8, hd).reshape(8, 8, -1)
    assert torch.equal(rb[:8, :8], rs)
    net = Denoiser.from_preset(tiny_dit_preset()).nets["unified"]
    for r in (4, 8):
        assert torch.equal(net.pos_embed[f"{r}x{r}"], sincos_table(r, 32))
    # MAE layout: first half of the channels encodes the column, the second half the row.
    t = sincos_table(4, 8).reshape(4, 4, 8)
    assert torch.equal(t[0, :, :4], t[3, :, :4]) and torch.equal(t[:, 0, 4:], t[:, 3, 4:])


def test_rope_depends_only_on_relative_position():
    torch.manual_seed(0)
    hd, grid = 16, 8
    angles = rope_angles(grid, hd)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(pq, pk):
        tq = apply_rope(q.expand(grid * grid, hd), angles)[pq[0] * grid + pq[1]]
        tk = apply_rope(k.expand(grid * grid, hd), angles)[pk[0] * grid + pk[1]]
        return float(tq @ tk)

    assert score((1, 2), (3, 1)) == pytest.approx(score((4, 5), (6, 4)), abs=1e-4)
    assert score((1, 2), (3, 1)) != pytest.approx(score((1, 2), (1, 3)), abs=1e-3)
    assert torch.allclose(apply_rope(q.expand(grid * grid, hd), angles).norm(dim=-1), q.norm(), atol=1e-5)


def test_dit_outputs_zero_at_init_and_serves_both_grids():
    p = tiny_dit_preset()
    model = Denoiser.from_preset(p)
    y = torch.eye(10)[:2]
    x8 = torch.randn(2, 4, 8, 8)
    v = model.network_output(x8, 0.5, y, cond=torch.randn_like(x8), sigma_cond=0.2)
    assert torch.equal(v, torch.zeros_like(v))
    v4 = perturbed(p).network_output(torch.randn(2, 4, 4, 4), 0.5, y)
    assert v4.shape == (2, 4, 4, 4) and v4.abs().sum() > 0
    with pytest.raises(ValueError, match="pass cond"):
        model(x8, 0.5, y)
    with pytest.raises(ValueError, match="class_labels"):
        model(torch.randn(2, 4, 4, 4), 0.5)


def test_cfg_scale_one_equals_the_unguided_model():
    p = tiny_dit_preset()
    model = perturbed(p)
    torch.manual_seed(1)
    x, cond = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    y, sc = torch.eye(10)[[1, 5, 7]], torch.full((3,), 0.4)
    plain = model(x, 0.3, y, cond=cond, sigma_cond=sc)
    assert torch.allclose(Guided(model, 1.0)(x, 0.3, y, cond=cond, sigma_cond=sc), plain, atol=1e-5)
    assert guided(model, p.stages[-1]) is model                    # cfg_scale 1: no wrapper at all
    # w != 1 guides every channel: D_u + w (D_c - D_u) with the null class (zero one-hot).
    uncond = model(x, 0.3, torch.zeros_like(y), cond=cond, sigma_cond=sc)
    out = Guided(model, 4.0)(x, 0.3, y, cond=cond, sigma_cond=sc)
    assert torch.allclose(out, uncond + 4.0 * (plain - uncond), atol=1e-4)
    # Outside the guidance interval only the conditional model runs.
    assert torch.equal(Guided(model, 4.0, sigma_max=0.2)(x, 0.3, y, cond=cond, sigma_cond=sc), plain)


def test_flow_sigmas_are_lightningdits_shifted_grid():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(flow_sigmas(100, 0.0, 1.0, 0.3), 1 - 0.3 * t / (1 - 0.7 * t))
    assert float(shift_time(torch.tensor(0.5), 0.3)) == pytest.approx(0.3 * 0.5 / 0.65)
    s = flow_sigmas(50, 0.0, 1.0, 0.3)
    assert s[0] == 1 and s[-1] == 0 and bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize("sigma_min, sigma_max", [(0.0, 0.7), (0.2, 1.0), (0.1, 0.5)])
def test_flow_sigmas_in_a_narrower_range_stay_on_the_shifted_grid(sigma_min, sigma_max):
    """A range other than [0, 1] (`--stage 16:sigma_max=0.7`, tune's sigma moves): the grid
    is decreasing from sigma_max to sigma_min, and its interior points lie on the same
    shifted curve, i.e. they are uniform in the unshifted time (once the shift is undone)."""
    s = flow_sigmas(10, sigma_min, sigma_max, 0.3)
    assert s[0] == sigma_max and s[-1] == sigma_min and bool((s[1:] < s[:-1]).all())
    t = shift_time(1 - s, 1 / 0.3)                                 # undo the shift
    assert torch.allclose(t[1:] - t[:-1], (t[-1] - t[0]) / 10 * torch.ones(10, dtype=torch.float64))


def test_imagenet_plans():
    info = describe("imagenet256")
    assert info["nfe_per_stage"] == {8: 45, 16: 50} and info["baseline"]["nfe"] == 100
    assert info["stages"][0]["truncation_sigma"] == pytest.approx(1 - shift_time(torch.tensor(0.45), 0.3).item())
    assert info["effective_nfe_flops"] == 61                 # spec 3.4: 50 + 45 x 0.24
    assert describe("imagenet256-lightningdit-b1")["nfe_per_stage"] == {16: 100}


def test_flow_euler_in_sigma_is_euler_in_t():
    """The cascade's Euler solver over sigma = 1 - t steps x += (t' - t) v."""
    p = tiny_dit_preset(stages=(8,))
    model = perturbed(p)
    y = torch.eye(10)[:2]
    x0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    sigmas = flow_sigmas(5, 0.0, 1.0, 0.3)
    out, nfe, reached = sample_euler(lambda x, s: model(x.float(), s, y).double(), x0, sigmas)
    x = x0.clone()
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x = x + (s - s_next) * model.network_output(x.float(), s, y).double()
    assert nfe == 5 and reached == 0 and torch.allclose(out, x, atol=1e-5)


def test_cascade_with_guidance_doubles_the_batch_inside_the_interval():
    p = tiny_dit_preset()
    model = perturbed(p)
    calls = []

    def counting(x, sigma, labels, cond=None, sigma_cond=None):
        calls.append(x.shape[0])
        return model(x, sigma, labels, cond=cond, sigma_cond=sigma_cond)

    stages = StagePlan([s.__class__(**{**s.__dict__, "cfg_scale": 3.0, "cfg_sigma_max": 0.9}) for s in p.stages])
    result = sample_cascade(counting, stages, PerImageGenerator([0, 1]), 4, torch.eye(10)[:2], precond=p.precond)
    assert result.nfe == {4: 3, 8: 6}
    evaluated = flow_sigmas(6, 0.0, 1.0, 0.3)[:3].tolist() + flow_sigmas(6, 0.0, 1.0, 0.3)[:6].tolist()
    assert calls == [2 if s > 0.9 else 4 for s in evaluated] and 2 in calls and 4 in calls


def test_flow_loss_touches_only_its_subnetwork():
    p = tiny_dit_preset()
    model = perturbed(p).train()
    net = model.nets["unified"]
    y8 = torch.randn(4, 4, 8, 8)
    pyr = {8: y8, 4: torch.nn.functional.avg_pool2d(y8, 2)}
    _, per = multires_loss(model, pyr, torch.eye(10)[:4])                     # with the cosine term (Flow.cosine)
    per[4].backward()
    touched = {n for n, q in net.named_parameters() if q.grad is not None and q.grad.abs().sum() > 0}
    allowed = set(net.subnetwork_parameters(4))
    assert touched and touched <= allowed
    assert not any(n.startswith(("x_embed.8x8", "final.8x8", "cond_noise_embed")) for n in touched)


def test_flow_preset_validation():
    p = tiny_dit_preset()
    p.stages[-1].sigma_min = 0.1
    with pytest.raises(ConfigError, match="sigma_min = 0"):
        p.validate()
    p = tiny_dit_preset()
    p.stages[0].solver = "dpmpp2m"                               # same ODE in sigma: allowed
    p.validate()
    p.stages[0].S_churn = 1.0
    with pytest.raises(ConfigError, match="no churn"):
        p.validate()
    p = tiny_dit_preset()
    p.stages[1].sigma_max = 0.7                                  # would start from noise without signal
    with pytest.raises(ConfigError, match="sigma_max must be 1"):
        p.validate()
    p = tiny_dit_preset(label_dim=0)
    p.stages[0].cfg_scale = 2.0
    with pytest.raises(ConfigError, match="class-conditional"):
        p.validate()
    p = tiny_dit_preset()
    p.network.num_heads = 3
    with pytest.raises(ConfigError, match="divisible"):
        p.validate()
    assert math.isinf(get_preset("cifar10-uncond").stages[0].cfg_sigma_max)
    p = get_preset("cifar10-uncond")                               # an option that would be ignored
    p.stages[0].shift = 0.3
    with pytest.raises(ConfigError, match="shift belongs to the flow schedule"):
        p.validate()


def test_latent_preset_round_trips_through_json():
    from lowdiff.config import Preset
    p = get_preset("imagenet256")
    q = Preset.from_dict(__import__("json").loads(p.to_json()))
    assert q.to_dict() == p.to_dict() and q.latent.image_resolution == 256 and q.precond.kind == "flow"


def test_the_two_fashion_latent_geometries_share_one_dit():
    """The 8x8 -> 16x16 pair of the f2 VAE (the paper's latent geometry one level down) is the
    4x4 -> 8x8 pair's DiT on single-channel latents: the same blocks, per-resolution input and
    output layers for 1 channel instead of 4, and the baseline's plan and recipe."""
    from lowdiff.train.compute import training_flops_per_image
    old, new = get_preset("lowdiff-fashion-latent-tiny"), get_preset("lowdiff-fashion-latent16-tiny")
    base = get_preset("flow-fashion-latent16-tiny")
    assert list(new.resolutions) == [8, 16] and list(base.resolutions) == [16] and new.baseline == base.name
    assert new.network.in_channels == base.network.in_channels == 1
    assert count_parameters(meta_denoiser(base)) == 1_899_901
    assert count_parameters(meta_denoiser(new)) == 2_007_678
    blocks = [count_parameters(meta_denoiser(p).nets["unified"].blocks) for p in (old, new, base)]
    assert blocks[0] == blocks[1] == blocks[2]
    assert [(s.steps, s.nfe) for s in new.stages] == [(s.steps, s.nfe) for s in old.stages] == [(20, 9), (10, None)]
    recipe = dataclasses.replace(get_preset("flow-fashion-latent-tiny").train, duration_kimg=120)
    assert base.stages[0].steps == 20 and base.train == recipe
    # a LowDiff image costs its 16x16 pass plus the 8x8 one (~1.2x): equal compute means fewer images
    per_image = {p.name: training_flops_per_image(p) for p in (new, base)}
    assert per_image[new.name][16] == pytest.approx(per_image[base.name][16], rel=0.01)
    assert 1.15 < sum(per_image[new.name].values()) / sum(per_image[base.name].values()) < 1.25
