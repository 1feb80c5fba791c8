"""Unified multi-resolution U-Net: EDM's SongUNet (DDPM++) whose inner levels double as
the whole network for lower resolutions (LowDiff paper, Sec. 3.3, Fig. 2 and 4).

Clean-room re-implementation from the published architecture descriptions (Song et al.
2021, "Score-based generative modeling through SDEs", DDPM++; Karras et al. 2022, EDM,
Appendix F.2). With a single resolution and no condition the network is
parameter-for-parameter the EDM SongUNet (see `EDM_KEY_MAP` for loading EDM weights).

Layout, for host resolution R and levels i = 0..L-1 at resolution R >> i:

  encoder  level 0: stem `inputs.RxR` (3x3 conv to model_channels), blocks 0..nb-1
           level i: `enc.{r}x{r}_down` (stride-2 block), blocks 0..nb-1
  decoder  deepest level: `dec.{r}x{r}_in0` (attention), `_in1`; other levels `_up`;
           then blocks 0..nb, each concatenating one skip (LIFO)
  head     `outputs.RxR`: GroupNorm -> SiLU -> 3x3 conv

For a lower resolution r = R >> i (LowDiff), a resolution-specific stem `inputs.{r}x{r}`
takes the place of `enc.{r}x{r}_down`, and a head `outputs.{r}x{r}` reads the decoder
output at level i. Only the modules of levels >= i run, so the r-network is exactly the
inner part of the host network plus its own tiny I/O layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import in_range
from ..errors import ConfigError
from .keys import res_key
from .shared import at_least_float32, check_sizes, settle_resolutions


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# Sizes beyond any published configuration (EDM's largest U-Net has 256 channels, 4 blocks per
# level): a config.json asking for more is refused before anything is allocated.
SIZE_BOUNDS = {"img_resolution": (1, 4096), "in_channels": (1, 64), "out_channels": (1, 64),
               "label_dim": (0, 100_000), "augment_dim": (0, 64), "model_channels": (1, 2048),
               "channel_mult_emb": (1, 16), "channel_mult_noise": (1, 16), "num_blocks": (1, 32)}


@dataclass
class UNetConfig:
    """SongUNet (DDPM++) hyper-parameters under EDM's names, plus LowDiff's resolution set."""
    arch: ClassVar[str] = "unet"
    img_resolution: int = 32                 # host (target) resolution R
    in_channels: int = 3                     # image channels (the condition adds as many)
    out_channels: int = 3
    label_dim: int = 0                       # number of classes, 0 = unconditional
    augment_dim: int = 0                     # augmentation labels (EDM: 9 when augment is on)
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    channel_mult_emb: int = 4
    channel_mult_noise: int = 1
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.10
    label_dropout: float = 0.0               # class-label dropout in training (classifier-free guidance)
    eps: float = 1e-6                        # GroupNorm epsilon
    resolutions: tuple[int, ...] = (32,)     # resolutions this network generates at
    base_resolution: int = 0                 # lowest cascade resolution (unconditional); 0 = min(resolutions)
    cond_noise_embedding: bool = True        # embed the condition's noise level (docs/architecture.md)

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        settle_resolutions(self)

    def validate(self) -> None:
        check_sizes(self, SIZE_BOUNDS)
        if not 1 <= len(self.channel_mult) <= 10:
            raise ConfigError(f"network channel_mult has {len(self.channel_mult)} levels; use 1 to 10")
        for m in self.channel_mult:
            in_range("network channel_mult entry", m, 1, 16, integer=True)
        in_range("network dropout", self.dropout, 0, 0.99)
        in_range("network label_dropout", self.label_dropout, 0, 1)
        R = self.img_resolution
        if not _is_pow2(R):
            raise ConfigError(f"img_resolution {R} is not a power of two")
        lowest = R >> (len(self.channel_mult) - 1)
        for r in self.resolutions:
            if not _is_pow2(r):
                raise ConfigError(f"resolution {r} is not a power of two; use e.g. 8, 16, 32, 64")
            if r > R or r < lowest:
                raise ConfigError(f"resolution {r} is outside the U-Net's levels {R}..{lowest}; "
                                  "change channel_mult or the resolutions")

    def runs_at(self, r: int) -> bool:
        """Whether a single-resolution network can run on an r x r image below its own (progressive
        sampling, lowdiff/diffusion/cascade.py): the U-Net is convolutional, so its whole route runs
        on any r its levels halve to whole pixels (r divisible by 2^(levels - 1))."""
        step = 1 << (len(self.channel_mult) - 1)
        return len(self.resolutions) == 1 and 0 < r < self.img_resolution and r % step == 0

    def lower_resolution_hint(self) -> str:
        """What `runs_at` accepts, for error messages."""
        step = 1 << (len(self.channel_mult) - 1)
        return (f"its {len(self.channel_mult)} levels halve the image {len(self.channel_mult) - 1} times, so "
                f"choose a resolution below {self.img_resolution} divisible by {step}")


# ---------------------------------------------------------------------------------------
# Initialisation used throughout SongUNet: xavier-uniform weights (optionally scaled),
# zero biases. "init_zero" layers use scale 1e-5, attention qkv sqrt(0.2).

def _init(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(scale)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(cin: int, cout: int, kernel: int, scale: float = 1.0) -> nn.Conv2d:
    return _init(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), scale)


def linear(cin: int, cout: int, bias: bool = True, scale: float = 1.0) -> nn.Linear:
    return _init(nn.Linear(cin, cout, bias=bias), scale)


def group_norm(channels: int, eps: float) -> nn.GroupNorm:
    """EDM's GroupNorm: 32 groups, but at least 4 channels per group; the groups must divide the channels."""
    groups = min(32, channels // 4)
    if groups < 1 or channels % groups:
        raise ConfigError(f"network model_channels: a level of {channels} channels cannot be split into {groups} "
                          "GroupNorm groups; use a model_channels whose multiples by channel_mult (and their sums, "
                          "the skip connections) are multiples of 32, e.g. 32, 64, 128")
    return nn.GroupNorm(groups, channels, eps=eps)


def resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
    """The [1,1] resample filter: 2x2 box downsampling or nearest x2 upsampling."""
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        return F.avg_pool2d(x, 2)
    return x


# ---------------------------------------------------------------------------------------
# Positional noise embedding (Vaswani et al. 2017), endpoint variant, [sin, cos] order as
# in Song et al.'s DDPM++.

def positional_embedding(t: torch.Tensor, channels: int, max_positions: int = 10000) -> torch.Tensor:
    """In float32, or in float64 for float64 noise labels (`at_least_float32`)."""
    half, dtype = channels // 2, at_least_float32(t)
    freqs = torch.arange(half, dtype=dtype, device=t.device) / (half - 1)
    freqs = (1.0 / max_positions) ** freqs
    angles = t.to(dtype).outer(freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


# ---------------------------------------------------------------------------------------
# DDPM++ residual block with optional up/down-sampling and single-head self-attention.

class UNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_channels: int, *, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0, eps: float = 1e-6,
                 skip_scale: float = math.sqrt(0.5)):
        super().__init__()
        self.cin, self.cout, self.up, self.down = cin, cout, up, down
        self.dropout, self.skip_scale = dropout, skip_scale
        self.norm0 = group_norm(cin, eps)
        self.conv0 = conv(cin, cout, 3)
        self.affine = linear(emb_channels, cout)             # additive per-channel embedding
        self.norm1 = group_norm(cout, eps)
        self.conv1 = conv(cout, cout, 3, scale=1e-5)         # near-zero init
        self.skip = conv(cin, cout, 1) if (cin != cout or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = group_norm(cout, eps)
            self.qkv = conv(cout, cout * 3, 1, scale=math.sqrt(0.2))
            self.proj = conv(cout, cout, 1, scale=1e-5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(resample(F.silu(self.norm0(x)), self.up, self.down))    # (N, C_out, r', r'), r' = r, 2r or r/2
        h = h + self.affine(emb)[:, :, None, None].to(h.dtype)                 # (N, C_out, r', r') + (N, C_out, 1, 1)
        h = F.dropout(F.silu(self.norm1(h)), p=self.dropout, training=self.training)   # (N, C_out, r', r')
        h = self.conv1(h)                                                       # (N, C_out, r', r')
        skip = resample(x, self.up, self.down)                                  # (N, C_in, r', r')
        if self.skip is not None:
            skip = self.skip(skip)                                              # (N, C_out, r', r')
        x = (h + skip) * self.skip_scale                                        # (N, C_out, r', r')
        if self.attention:
            x = (self.proj(self._attend(self.norm2(x))) + x) * self.skip_scale  # (N, C_out, r', r')
        return x

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Single-head attention over pixels. qkv channels are interleaved per channel
        (q = 3c, k = 3c+1, v = 3c+2), the layout of EDM's weights."""
        n, c, h, w = x.shape                                                    # x: (N, C, H, W)
        q, k, v = self.qkv(x).reshape(n, 1, c, 3, h * w).unbind(3)              # 3 x (N, 1, C, HW)
        out = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))   # (N, 1, HW, C)
        return out.transpose(2, 3).reshape(n, c, h, w)                          # (N, C, H, W)


class OutputHead(nn.Module):
    """Resolution-specific output layer: GroupNorm -> SiLU -> 3x3 conv (near-zero init)."""

    def __init__(self, channels: int, out_channels: int, eps: float):
        super().__init__()
        self.norm = group_norm(channels, eps)
        self.conv = conv(channels, out_channels, 3, scale=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)))


# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Hop:
    """One block on a resolution's route through the shared levels."""
    part: str      # 'enc' or 'dec'
    name: str      # key in the ModuleDict
    pop_skip: bool  # decoder block that concatenates a skip


class UnifiedUNet(nn.Module):
    """SongUNet serving every resolution in `cfg.resolutions` with shared inner levels.

    forward(x, noise_labels, class_labels=None, augment_labels=None, cond=None,
            cond_noise_labels=None): x is (N, C, r, r) for a served r. Resolutions above
    `cfg.base_resolution` are conditioned: `cond` (N, C, r, r) is concatenated to x.
    """
    # The parts `baseline.load_baseline` sets: per-resolution stems, resolution and condition-noise embeddings.
    STEM, RES_EMBED, COND_NOISE_EMBED = "inputs", "map_resolution", "map_cond_noise"

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        R, mc = cfg.img_resolution, cfg.model_channels
        levels = len(cfg.channel_mult)
        top = max(cfg.resolutions)
        self.top_level = int(math.log2(R // top))
        emb_ch = mc * cfg.channel_mult_emb
        noise_ch = mc * cfg.channel_mult_noise
        self.noise_channels = noise_ch
        block = dict(emb_channels=emb_ch, dropout=cfg.dropout, eps=cfg.eps)

        # Mapping network (EDM's order: noise, label, augment; then LowDiff's additions).
        self.map_label = linear(cfg.label_dim, noise_ch) if cfg.label_dim else None
        self.map_augment = linear(cfg.augment_dim, noise_ch, bias=False) if cfg.augment_dim else None
        self.map_resolution = linear(len(cfg.resolutions), noise_ch) if len(cfg.resolutions) > 1 else None
        conditioned = any(r > cfg.base_resolution for r in cfg.resolutions)
        self.map_cond_noise = (linear(noise_ch, noise_ch, bias=False)
                               if conditioned and cfg.cond_noise_embedding else None)
        self.map_layer0 = linear(noise_ch, emb_ch)
        self.map_layer1 = linear(emb_ch, emb_ch)

        # Encoder / decoder of the host network, restricted to levels >= top_level.
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        stem_channels: dict[int, int] = {}      # level -> channels of that level's first skip
        level_out: dict[int, int] = {}          # level -> decoder output channels
        skips: list[int] = []
        cout = mc
        for level, mult in enumerate(cfg.channel_mult):
            r = R >> level
            stem_channels[level] = cout
            if level == 0:
                skips.append(cout)
            else:
                if level > self.top_level:
                    self.enc[f"{res_key(r)}_down"] = UNetBlock(cout, cout, down=True, **block)
                skips.append(cout)
            for b in range(cfg.num_blocks):
                cin, cout = cout, mc * mult
                if level >= self.top_level:
                    self.enc[f"{res_key(r)}_block{b}"] = UNetBlock(cin, cout, attention=r in cfg.attn_resolutions,
                                                                 **block)
                skips.append(cout)
        for level in reversed(range(levels)):
            r = R >> level
            keep = level >= self.top_level
            if level == levels - 1:
                if keep:
                    self.dec[f"{res_key(r)}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                    self.dec[f"{res_key(r)}_in1"] = UNetBlock(cout, cout, **block)
            elif keep:
                self.dec[f"{res_key(r)}_up"] = UNetBlock(cout, cout, up=True, **block)
            for b in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), mc * cfg.channel_mult[level]
                if keep:
                    attn = b == cfg.num_blocks and r in cfg.attn_resolutions
                    self.dec[f"{res_key(r)}_block{b}"] = UNetBlock(cin, cout, attention=attn, **block)
            level_out[level] = cout

        # Resolution-specific input and output layers.
        self.inputs, self.outputs = nn.ModuleDict(), nn.ModuleDict()
        self._routes: dict[int, list[_Hop]] = {}
        for r in sorted(cfg.resolutions):
            level = int(math.log2(R // r))
            cin = cfg.in_channels * (2 if r > cfg.base_resolution else 1)
            self.inputs[res_key(r)] = conv(cin, stem_channels[level], 3)
            self.outputs[res_key(r)] = OutputHead(level_out[level], cfg.out_channels, cfg.eps)
            self._routes[r] = self._route(level)

    def _route(self, first_level: int) -> list[_Hop]:
        """Modules run for a resolution whose stem sits at `first_level`, in order."""
        cfg, R = self.cfg, self.cfg.img_resolution
        levels = len(cfg.channel_mult)
        hops = []
        for level in range(first_level, levels):
            r = res_key(R >> level)
            if level > first_level:
                hops.append(_Hop("enc", f"{r}_down", False))
            hops += [_Hop("enc", f"{r}_block{b}", False) for b in range(cfg.num_blocks)]
        for level in reversed(range(first_level, levels)):
            r = res_key(R >> level)
            if level == levels - 1:
                hops += [_Hop("dec", f"{r}_in0", False), _Hop("dec", f"{r}_in1", False)]
            else:
                hops.append(_Hop("dec", f"{r}_up", False))
            hops += [_Hop("dec", f"{r}_block{b}", True) for b in range(cfg.num_blocks + 1)]
        return hops

    # -----------------------------------------------------------------------------------

    def embed(self, noise_labels: torch.Tensor, resolution: int, class_labels=None, augment_labels=None,
              cond_noise_labels=None) -> torch.Tensor:
        """Noise (+ label, augment, resolution, condition-noise) embedding -> mapping MLP."""
        cfg = self.cfg
        emb = positional_embedding(noise_labels, self.noise_channels)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels (one-hot, "
                                 f"shape [N, {cfg.label_dim}])")
            labels = class_labels.to(emb.dtype)
            emb = emb + self.map_label(labels * math.sqrt(cfg.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        if self.map_resolution is not None:
            index = sorted(cfg.resolutions).index(resolution)
            onehot = torch.zeros(emb.shape[0], len(cfg.resolutions), device=emb.device, dtype=emb.dtype)
            onehot[:, index] = 1
            emb = emb + self.map_resolution(onehot)
        if self.map_cond_noise is not None and cond_noise_labels is not None:
            emb = emb + self.map_cond_noise(positional_embedding(cond_noise_labels, self.noise_channels))
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels=None, augment_labels=None,
                cond: torch.Tensor | None = None, cond_noise_labels: torch.Tensor | None = None) -> torch.Tensor:
        r = x.shape[-1]                                          # x: (N, C, r, r)
        route = r if r in self._routes or not self.cfg.runs_at(r) else max(self._routes)   # progressive: own route
        if route not in self._routes or x.shape[-2] != r:
            raise ValueError(f"input of shape {tuple(x.shape)}: this network serves square resolutions "
                             f"{sorted(self._routes)}")
        if r > self.cfg.base_resolution:
            if cond is None:
                raise ValueError(f"resolution {r} is conditioned on the upsampled lower-resolution image: pass cond")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)          # (N, 2C, r, r): noisy image + condition
        emb = self.embed(noise_labels, route, class_labels, augment_labels, cond_noise_labels)   # (N, E)
        h = self.inputs[res_key(route)](x)                       # (N, channels of level log2(R/route), r, r)
        skips = [h]
        for hop in self._routes[route]:                              # down the shared levels, then up
            if hop.pop_skip:
                h = torch.cat([h, skips.pop()], dim=1)           # (N, C_h + C_skip, r', r')
            h = getattr(self, hop.part)[hop.name](h, emb)        # (N, C_block, r', r'), r' halves / doubles
            if hop.part == "enc":
                skips.append(h)
        return self.outputs[res_key(route)](h)                   # (N, C_out, r, r)

    def subnetwork_parameters(self, resolution: int) -> list[str]:
        """Names of the parameters a forward pass at `resolution` can touch."""
        used = {f"{hop.part}.{hop.name}." for hop in self._routes[resolution]}
        used |= {f"inputs.{res_key(resolution)}.", f"outputs.{res_key(resolution)}.", "map_"}
        return [n for n, _ in self.named_parameters() if any(n.startswith(u) for u in used)]


# ---------------------------------------------------------------------------------------
# Loading NVlabs/edm SongUNet state dicts (users own pretrained EDM weights). EDM keys are
# `model.<name>` inside the preconditioning wrapper; resample filters are buffers we
# compute instead. Everything else maps 1:1, except the stem and the head:
EDM_KEY_MAP = {
    "enc.{R}x{R}_conv.": "inputs.{R}x{R}.",
    "dec.{R}x{R}_aux_norm.": "outputs.{R}x{R}.norm.",
    "dec.{R}x{R}_aux_conv.": "outputs.{R}x{R}.conv.",
}


def convert_edm_state_dict(state: dict[str, torch.Tensor], img_resolution: int) -> dict[str, torch.Tensor]:
    """Map an EDM SongUNet (or its Precond wrapper) state dict to UnifiedUNet keys."""
    rename = {k.format(R=img_resolution): v.format(R=img_resolution) for k, v in EDM_KEY_MAP.items()}
    out = {}
    for key, value in state.items():
        key = key.removeprefix("model.")
        if key.endswith("resample_filter"):
            continue
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out
