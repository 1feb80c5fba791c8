"""Latents: the VAE loaders (diffusers directory, LDM / VA-VAE layout file), `dataset
encode` (shards, mirror twins, pyramid, statistics), the latent dataset, and the latent
path end to end: encode -> train -> sample -> decode, with a tiny random AutoencoderKL."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_dit_preset

pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

from helpers import run  # noqa: E402
from lowdiff.config import LatentConfig  # noqa: E402
from lowdiff.errors import ConfigError  # noqa: E402
from lowdiff.data import make_synthetic, open_dataset  # noqa: E402
from lowdiff.data.latents import LatentDataset, denormalize, encode_dataset, normalize  # noqa: E402
from lowdiff.data.vae import convert_ldm_vae_state_dict, load_vae  # noqa: E402
from lowdiff.diffusion import pyramid  # noqa: E402
from lowdiff.train.loop import Trainer  # noqa: E402


def tiny_vae(attention: bool = False, seed: int = 0) -> AutoencoderKL:
    """f2, 1 -> 4 channels: 16x16 images give 8x8 latents."""
    torch.manual_seed(seed)
    down = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D" if attention else "DownEncoderBlock2D")
    up = ("AttnUpDecoderBlock2D" if attention else "UpDecoderBlock2D", "UpDecoderBlock2D")
    return AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16), down_block_types=down,
                         up_block_types=up, layers_per_block=1, latent_channels=4, norm_num_groups=4,
                         sample_size=16).eval()


@pytest.fixture
def vae_dir(tmp_path):
    path = tmp_path / "vae"
    tiny_vae().save_pretrained(path)
    return path


def to_ldm_layout(state):
    """Rename diffusers keys into the LDM / VA-VAE checkpoint layout (spec 4.3, read backwards)."""
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks."))
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        k = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        k = k.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        k = k.replace("mid_block.attentions.0", "mid.attn_1")
        parts = k.split(".")
        if parts[1] in ("down_blocks", "up_blocks"):
            i = int(parts[2]) if parts[1] == "down_blocks" else levels - 1 - int(parts[2])
            kind = {"resnets": "block", "attentions": "attn", "downsamplers": "downsample",
                    "upsamplers": "upsample"}[parts[3]]
            rest = parts[5:] if kind in ("downsample", "upsample") else parts[4:]
            k = ".".join([parts[0], parts[1].split("_")[0], str(i), kind, *rest])
        if "attn" in k:
            for new, old in attn.items():
                k = k.replace(f".{new}.", f".{old}.")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[k] = value
    out["loss.discriminator.weight"] = torch.zeros(3)          # dropped by the loader, as VA-VAE's are
    return out


def test_ldm_layout_file_loads_with_level_attention(tmp_path):
    vae = tiny_vae(attention=True)
    ldm = to_ldm_layout(vae.state_dict())
    assert "encoder.down.1.attn.0.q.weight" in ldm and "decoder.up.1.attn.0.proj_out.weight" in ldm
    assert set(convert_ldm_vae_state_dict(ldm)) == set(vae.state_dict())
    path = tmp_path / "vavae.pt"
    torch.save({"state_dict": ldm}, path)
    loaded = load_vae(path, norm_num_groups=4)
    assert loaded.config.down_block_types[-1] == "AttnDownEncoderBlock2D"
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        assert torch.allclose(loaded.encode(x).latent_dist.mean, z, atol=1e-6)
        assert torch.allclose(loaded.decode(z).sample, vae.decode(z).sample, atol=1e-5)


def test_encode_writes_shards_twins_pyramid_and_stats(tmp_path, vae_dir):
    ds = make_synthetic(20, 16, channels=1)
    m = encode_dataset(ds, vae_dir, tmp_path / "lat", batch=6, shard_size=8, progress=False)
    assert m["resolutions"] == [8, 4] and m["count"] == 20 and len(m["shards"]) == 3
    lat = open_dataset(str(tmp_path / "lat"))
    assert isinstance(lat, LatentDataset) and len(lat) == 20 and lat.channels == 4 and lat.resolution == 8
    assert np.array_equal(lat.labels, ds.labels)
    idx = np.arange(20)
    z8, z4 = torch.from_numpy(lat.rows("latents_8", idx)), torch.from_numpy(lat.rows("latents_4", idx))
    assert torch.allclose(pyramid.downsample(z8, 4), z4, atol=1e-6)         # the 4x4 latents come from the pyramid
    assert not torch.allclose(torch.from_numpy(lat.rows("latents_8_flip", idx)), z8)
    for r, z in ((8, z8), (4, z4)):
        stats = m["stats"][str(r)]
        assert np.allclose(stats["mean"], z.double().mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
        assert np.allclose(stats["std"], z.double().std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-5)
    cfg = lat.latent_config()
    pyr = lat.pyramid(idx, None, [4, 8], cfg)
    assert torch.allclose(pyr[8].mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(pyr[8].std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.allclose(denormalize(pyr[8], cfg), z8, atol=1e-5)
    flip = torch.tensor([True] * 10 + [False] * 10)
    mixed = lat.pyramid(idx, flip, [8], cfg)[8]
    assert torch.allclose(mixed[:10], normalize(torch.from_numpy(lat.rows("latents_8_flip", idx[:10])), cfg))
    scale = LatentConfig(norm="scale", multiplier=0.18215)
    assert torch.allclose(normalize(z8, scale), z8 * 0.18215)


def test_latent_datasets_and_presets_must_agree(tmp_path, vae_dir):
    encode_dataset(make_synthetic(8, 16, channels=1), vae_dir, tmp_path / "lat", progress=False)
    lat = LatentDataset(tmp_path / "lat")
    with pytest.raises(ConfigError, match="dataset encode"):
        Trainer(tiny_dit_preset(), make_synthetic(8, 16, channels=1), tmp_path / "r1")
    from conftest import tiny_preset
    with pytest.raises(ConfigError, match="holds latents"):
        Trainer(tiny_preset(channels=4), lat, tmp_path / "r2")
    with pytest.raises(ValueError, match="--lowest 2"):
        Trainer(tiny_dit_preset(stages=(2, 4, 8)), lat, tmp_path / "r3")
    with pytest.raises(ConfigError, match="is 8x8 but preset .* generates 16x16"):   # not "re-encode with --lowest"
        Trainer(tiny_dit_preset(stages=(8, 16)), lat, tmp_path / "r4")


def test_latent_path_end_to_end(tmp_path, capsys, vae_dir):
    """encode -> train (flow loss, both resolutions, mirror twins) -> sample (Euler cascade,
    CFG) -> decode with the recorded VAE."""
    lat = tmp_path / "lat"
    code, _, err = run(capsys, "dataset", "encode", "synthetic:24:16", "--vae", str(vae_dir), "--out", str(lat),
                       "--batch", "8", "--no-progress")
    assert code == 0 and "resolutions [8, 4]" in err
    spec = tmp_path / "preset.json"
    spec.write_text(tiny_dit_preset().to_json())
    out = tmp_path / "run"
    code, _, _ = run(capsys, "train", "--preset", str(spec), "--data", str(lat), "--out", str(out), "--no-progress")
    assert code == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and {"loss_4", "loss_8"} <= set(log[-1])
    config = json.loads((out / "config.json").read_text())
    assert config["latent"]["vae"] == str(vae_dir.resolve()) and set(config["latent"]["stats"]) == {"4", "8"}
    code, _, err = run(capsys, "sample", "--checkpoint", str(out), "--num", "4", "--out", str(tmp_path / "g"),
                       "--random-class", "--stage", "8:cfg_scale=2,cfg_sigma_max=0.9", "--no-progress")
    assert code == 0 and "{4: 3, 8: 6}" in err
    from PIL import Image
    img = Image.open(tmp_path / "g" / "000000.png")
    assert img.size == (16, 16) and img.mode == "L"                         # decoded by the tiny VAE


def _vae(path, levels: int = 2, latent_channels: int = 4):
    """A tiny random AutoencoderKL of factor 2^(levels - 1) saved at `path`."""
    torch.manual_seed(0)
    AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,) * levels,
                  down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                  layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4).save_pretrained(path)
    return path


@pytest.mark.parametrize("levels, channels, message", [
    (3, 4, "a factor-4 autoencoder decodes the model's 8x8 latents to 32x32, the model was trained on 16x16 images"),
    (2, 2, "its latents have 2 channels, the model samples 4"),
])
def test_a_latent_model_refuses_an_autoencoder_it_was_not_trained_with(tmp_path, capsys, levels, channels, message):
    """--vae of another downsampling factor or channel count: one line naming the option, before sampling."""
    from lowdiff.diffusion.denoiser import Denoiser
    from lowdiff.pipeline import Pipeline
    from lowdiff.storage import save_pretrained
    preset = tiny_dit_preset()                                       # 8x8x4 latents of 16x16 images: f2
    save_pretrained(tmp_path / "model", preset, Denoiser.from_preset(preset).state_dict())
    vae = _vae(tmp_path / "vae", levels, channels)
    code, _, err = run(capsys, "sample", "--checkpoint", tmp_path / "model", "--vae", vae, "--num", "2",
                       "--out", tmp_path / "g.png", "--no-progress")
    assert code == 2 and f"--vae {vae}: {message}" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "g.png").exists()
    Pipeline(Denoiser.from_preset(preset), preset, vae=_vae(tmp_path / "right"))      # the f2, 4-channel one loads
