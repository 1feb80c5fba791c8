"""Autoencoders for latent presets, loaded as diffusers `AutoencoderKL` (imported lazily:
the rest of lowdiff works without diffusers).

- `load_vae`: `bundled:fashion-vae` (lowdiff/assets), or from a local directory (diffusers layout, e.g. SD-VAE `stabilityai/sd-vae-ft-ema`,
  or one written by `lowdiff vae train`) or from a weight file in the LDM / VA-VAE layout
  (`vavae-imagenet256-f16d32-dinov2.pt`), whose keys are mapped as the spec's Sec. 4.3
  describes (level attention included, which diffusers' own converter misses).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import bundled
from ..errors import ConfigError
from ..files import read_json
from .base import DatasetError


def autoencoder_kl_class():
    """diffusers' AutoencoderKL, or an ImportError saying what to install."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError("latents need diffusers: pip install 'lowdiff[latent]' (or pip install diffusers)") from e
    return AutoencoderKL


def to_vae_input(images: np.ndarray, channels: int, device) -> torch.Tensor:
    """uint8 images -> a VAE's input in [-1, 1] with its channel count (a gray image is repeated)."""
    x = torch.from_numpy(images).to(device, torch.float32) / 127.5 - 1
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    raise DatasetError(f"the images have {x.shape[1]} channels but the VAE takes {channels}")


def downsampling_factor(block_out_channels) -> int:
    """An AutoencoderKL's side reduction: every encoder level but the last halves the side."""
    return 2 ** (len(block_out_channels) - 1)


def load_vae(path: str | Path, device: str | torch.device = "cpu", norm_num_groups: int = 32):
    """AutoencoderKL from a diffusers directory, or from an LDM / VA-VAE layout weight file
    (.safetensors, or .pt/.ckpt/.pth read with torch.load(weights_only=True)); the file's
    architecture is read off its tensor shapes."""
    AutoencoderKL = autoencoder_kl_class()
    path = bundled.resolve(path)
    if path.is_dir():
        _check_vae_dir(path)
        try:
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
            raise DatasetError(f"VAE {path}: not a loadable diffusers AutoencoderKL ({_first_line(e)})") from None
    elif path.is_file():
        state = _read_weights(path)
        if not any(k.startswith("encoder.down.") for k in state):
            raise DatasetError(f"{path}: not an LDM-layout KL autoencoder (no encoder.down.* keys); pass a "
                               "diffusers VAE directory instead")
        vae = AutoencoderKL(**ldm_vae_config(state, norm_num_groups))
        missing, unexpected = vae.load_state_dict(convert_ldm_vae_state_dict(state), strict=False)
        if missing or unexpected:
            raise DatasetError(f"{path}: weights do not fit the inferred VAE (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
    else:
        raise DatasetError(f"VAE {path}: no such file or directory")
    return vae.to(device).eval().requires_grad_(False)


def _check_vae_dir(path: Path) -> None:
    """A diffusers AutoencoderKL directory: its config.json names the class, and a weight file is beside it."""
    config = path / "config.json"
    if not config.is_file():
        raise DatasetError(f"VAE {path}: a VAE directory needs the diffusers config.json and weights")
    try:
        data = read_json(config)
    except ConfigError as e:
        raise DatasetError(f"VAE {e}") from None
    kind = data.get("_class_name") if isinstance(data, dict) else None
    if kind != "AutoencoderKL":
        lowdiff_model = isinstance(data, dict) and "stages" in data
        what = "a lowdiff model directory" if lowdiff_model else f"a {kind or 'foreign'} directory"
        raise DatasetError(f"VAE {path}: {what}, not a diffusers AutoencoderKL (its config.json names no "
                           "_class_name AutoencoderKL); give the VAE's directory or weight file")
    if not any((path / name).is_file() for name in VAE_WEIGHT_FILES):
        raise DatasetError(f"VAE {path}: no weight file ({' or '.join(VAE_WEIGHT_FILES)})")


VAE_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:        # safetensors', torch's and its unpickler's errors: all mean "not weights"
        raise DatasetError(f"VAE {path}: not a readable weight file (.safetensors, or a torch checkpoint of "
                           f"tensors): {_first_line(e)}") from None
    if not isinstance(state, dict):
        raise DatasetError(f"VAE {path}: holds a {type(state).__name__}, not a dict of weights")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and "loss" not in k}


def ldm_vae_config(state: dict[str, torch.Tensor], norm_num_groups: int = 32) -> dict:
    """AutoencoderKL keyword arguments for an LDM-layout state dict: widths per level,
    blocks per level, attention levels, latent channels (the LDM / diffusers AutoencoderKL layout)."""
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    widths = [state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    blocks = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
    attn = [any(k.startswith(f"encoder.down.{i}.attn.") for k in state) for i in levels]
    up_attn = [any(k.startswith(f"decoder.up.{i}.attn.") for k in state) for i in levels]
    return dict(in_channels=state["encoder.conv_in.weight"].shape[1],
                out_channels=state["decoder.conv_out.weight"].shape[0],
                block_out_channels=tuple(widths), layers_per_block=blocks,
                down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn),
                up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(up_attn)),
                latent_channels=state["decoder.conv_in.weight"].shape[1], norm_num_groups=norm_num_groups,
                use_quant_conv="quant_conv.weight" in state, use_post_quant_conv="post_quant_conv.weight" in state,
                mid_block_add_attention=any(k.startswith("encoder.mid.attn_1.") for k in state))


_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_MID = {"block_1": "resnets.0", "block_2": "resnets.1", "attn_1": "attentions.0"}


def _ldm_key(key: str, levels: int) -> str:
    """One LDM key -> diffusers (the two public layouts of AutoencoderKL): down.i.block.j -> down_blocks.i.resnets.j,
    up.i -> up_blocks.(L-1-i), mid.block_1/2 and attn_1, norm_out -> conv_norm_out,
    nin_shortcut -> conv_shortcut, attention norm/q/k/v/proj_out -> group_norm/to_q/..."""
    parts = key.split(".")
    if parts[0] not in ("encoder", "decoder"):
        return key
    side, rest = parts[0], parts[1:]
    if rest[0] in ("down", "up"):
        level = int(rest[1]) if rest[0] == "down" else levels - 1 - int(rest[1])
        head = f"{rest[0]}_blocks.{level}"
        kind, tail = rest[2], rest[3:]
        if kind in ("downsample", "upsample"):
            rest = [head, f"{kind}rs.0", *tail]
        else:
            rest = [head, "resnets" if kind == "block" else "attentions", *tail]
    elif rest[0] == "mid":
        rest = ["mid_block", _MID[rest[1]], *rest[2:]]
    elif rest[0] == "norm_out":
        rest = ["conv_norm_out", *rest[1:]]
    out = ".".join(rest)
    out = out.replace(".nin_shortcut.", ".conv_shortcut.")
    if ".attentions." in out:
        name, param = out.rsplit(".", 2)[-2:]
        out = out[: -len(name + "." + param)] + f"{_ATTN.get(name, name)}.{param}"
    return f"{side}.{out}"


def convert_ldm_vae_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an LDM / VA-VAE KL-autoencoder state dict to diffusers AutoencoderKL keys; the
    1x1-conv attention weights become Linear weights. Keys of other modules (the VF-loss
    projection, DINOv2, discriminator) are dropped."""
    levels = len({k.split(".")[2] for k in state if k.startswith("encoder.down.")})
    out = {}
    for key, value in state.items():
        if not key.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")):
            continue
        new = _ldm_key(key, levels)
        if ".attentions." in new and new.endswith("weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


