"""Unified multi-resolution diffusion transformer in the LightningDiT style (LowDiff paper
Sec. 3 and 4.1: LightningDiT-B/1 with resolution-specific input/output layers and a
resolution embedding).

Clean-room re-implementation from the formulas of DiT (Peebles & Xie 2023, Sec. 3) and
LightningDiT (Yao et al. 2025, Sec. 4); no DiT / LightningDiT code is used. With one
resolution and no condition the network has LightningDiT's layout, parameter for parameter
(B/1: 130,556,192, the paper's 130.56M).

Layout, for each served latent side r with patch p (grid g = r/p, T = g^2 tokens,
row-major), width D:

  x_embed.{r}x{r}    Conv2d(C_r, D, p, stride p); C_r = C, or 2C above the lowest stage
                     (noisy latent and upsampled condition, concatenated)
  pos_embed.{r}x{r}  frozen 2-D sin-cos table (T, D) for grid g, added to the tokens
                     (a parameter without gradient, as LightningDiT keeps it, so that it
                     counts in the parameter total the paper reports)
  blocks.i           shared adaLN-Zero blocks: RMSNorm, attention with 2-D RoPE (+ optional
                     qk-norm), SwiGLU
  final.{r}x{r}      adaLN (shift, scale) -> RMSNorm -> Linear(D, p^2 C_out)

The conditioning vector is c = t_emb + y_emb + r_emb (DiT Sec. 3.2, adaLN-Zero, plus LowDiff's
resolution embedding, one-hot -> Linear). The condition's noise level enters as its own
frequency embedding, projected (Linear, no bias) and added to the time frequencies before
the time MLP, the way UnifiedUNet adds it before its mapping network (our addition to the
paper's Sec. 3.3 condition; docs/architecture.md, "The unified network").

Positions are functions of the grid size alone: token (h, w) of any grid gets the same
sin-cos vector and RoPE angles (index positions; RoFormer, Su et al. 2021, in 2-D); the resolution
embedding tells the blocks the scale.
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

FREQ_DIM = 256          # time-frequency embedding width (DiT's TimestepEmbedder)


# Sizes beyond any published configuration (DiT-XL: width 1152, depth 28, 16 heads): refused
# before anything is allocated.
SIZE_BOUNDS = {"img_resolution": (1, 1024), "in_channels": (1, 1024), "out_channels": (1, 1024),
               "label_dim": (0, 100_000), "hidden_size": (4, 8192), "depth": (1, 256), "num_heads": (1, 256),
               "patch_size": (1, 64)}


@dataclass
class DiTConfig:
    """LightningDiT-style transformer hyper-parameters (LightningDiT Sec. 4, Tab. 1); sides are latent sides."""
    arch: ClassVar[str] = "dit"
    img_resolution: int = 16                 # target latent side
    in_channels: int = 32                    # latent channels (the condition adds as many)
    out_channels: int = 32
    label_dim: int = 0                       # number of classes, 0 = unconditional
    label_dropout: float = 0.0               # class dropout for classifier-free guidance (null class = zero row)
    hidden_size: int = 768                   # token width D
    depth: int = 12                          # number of blocks
    num_heads: int = 12                      # attention heads
    patch_size: int = 1                      # patch side p (tokens = (r / p)^2)
    mlp_ratio: float = 4.0                   # SwiGLU hidden = int(2/3 * mlp_ratio * D)
    qk_norm: bool = False                    # RMSNorm on queries and keys
    rope: bool = True                        # 2-D rotary position embedding in attention
    resolutions: tuple[int, ...] = (16,)     # latent sides this network generates at
    base_resolution: int = 0                 # lowest cascade side (unconditional); 0 = min(resolutions)
    cond_noise_embedding: bool = True        # embed the condition's noise level (docs/architecture.md)

    def __post_init__(self):
        settle_resolutions(self)

    def validate(self) -> None:
        check_sizes(self, SIZE_BOUNDS)
        in_range("network mlp_ratio", self.mlp_ratio, 0.25, 16)
        in_range("network label_dropout", self.label_dropout, 0, 1)
        D, heads = self.hidden_size, self.num_heads
        if D % heads or D % 4 or (self.rope and (D // heads) % 4):
            raise ConfigError(f"hidden_size {D} must be divisible by 4 and by num_heads {heads}, and the head "
                              "dimension by 4 (2-D RoPE rotates pairs along two axes)")
        for r in self.resolutions:
            if r % self.patch_size or r > self.img_resolution:
                raise ConfigError(f"resolution {r} must be a multiple of patch_size {self.patch_size} and at most "
                                  f"img_resolution {self.img_resolution}")

    def runs_at(self, r: int) -> bool:
        """Progressive sampling at a lower side is not supported for the transformer: its patch
        embedding, sin-cos table and final layer belong to one grid (see UNetConfig.runs_at)."""
        return False

    def lower_resolution_hint(self) -> str:
        return "progressive plans run a U-Net (arch unet) at lower resolutions; this model is a DiT"


# ---------------------------------------------------------------------------------------
# Position and time encodings (DiT Sec. 3.2; RoPE as in LightningDiT Sec. 4). Pure functions of the grid.

def timestep_frequencies(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10_000.0) -> torch.Tensor:
    """[cos(t w_k), sin(t w_k)], w_k = exp(-ln(max_period) k / (dim/2)); t is the continuous
    flow time in [0, 1], not rescaled."""
    half, dtype = dim // 2, at_least_float32(t)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    angles = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def grid_positions(grid: int, device=None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) index of each token of a grid x grid patch grid, row-major."""
    idx = torch.arange(grid, dtype=dtype, device=device)
    return idx.repeat_interleave(grid), idx.repeat(grid)


def sincos_table(grid: int, dim: int, device=None) -> torch.Tensor:
    """2-D sin-cos absolute positions (T, dim): the first dim/2 channels encode the column,
    the second dim/2 the row, each as [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-k/(dim/4))."""
    rows, cols = grid_positions(grid, device)
    omega = 10_000.0 ** (-torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim // 4))

    def axis(pos):
        angles = pos[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([axis(cols), axis(rows)], dim=1).to(torch.float32)


def rope_angles(grid: int, head_dim: int, base: float = 10_000.0, device=None) -> torch.Tensor:
    """Rotation angle of each channel pair (T, head_dim/2): the first head_dim/4 pairs turn
    with the row index, the rest with the column, at theta_j = base^(-j/(head_dim/4))."""
    rows, cols = grid_positions(grid, device, torch.float32)
    n = head_dim // 4
    theta = base ** (-torch.arange(n, dtype=torch.float32, device=device) / n)
    return torch.cat([rows[:, None] * theta, cols[:, None] * theta], dim=1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2j, 2j+1) of x (..., T, head_dim) by angles (T, head_dim/2):
    (a, b) -> (a cos - b sin, a sin + b cos)."""
    a, b = x.to(at_least_float32(x)).unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


# ---------------------------------------------------------------------------------------
# Layers (LightningDiT Sec. 4: SwiGLU, RMSNorm, RoPE, optional qk-norm).

class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (float64 for float64 x)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(at_least_float32(x))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.to(h.dtype)).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x (1 + scale) + shift, per sample over all tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv, optional qk RMSNorm over head_dim (weights shared
    across heads), RoPE on q and k, scaled dot-product attention, output projection."""

    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        n, t, d = x.shape                                          # x: (N, T, D)
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # 3 x (N, H, T, D/H)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)                  # (N, H, T, D/H)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)        # (N, H, T, D/H)
        out = F.scaled_dot_product_attention(q, k, v)              # (N, H, T, D/H)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))     # (N, T, D)


class SwiGLU(nn.Module):
    """One fused Linear(D, 2H) split into (a, b); SiLU(a) * b; Linear(H, D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)                        # 2 x (N, T, H)
        return self.fc2(F.silu(a) * b)                             # (N, T, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block: (shift, scale, gate) for attention and for the MLP from SiLU(c);
    x += gate_a Attn(modulate(norm1 x)); x += gate_m MLP(modulate(norm2 x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qk_norm: bool):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads, qk_norm)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.ada = nn.Linear(dim, 6 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(F.silu(c)).chunk(6, dim=1)   # 6 x (N, D)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a), rope)      # (N, T, D)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))         # (N, T, D)


class FinalLayer(nn.Module):
    """Resolution-specific output: (shift, scale) from SiLU(c), RMSNorm, modulate, Linear."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.ada = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(F.silu(c)).chunk(2, dim=1)         # 2 x (N, D)
        return self.linear(modulate(self.norm(x), shift, scale))   # (N, T, p^2 C_out)


class LabelEmbedder(nn.Module):
    """Class table with one extra "null" row (index num_classes) for classifier-free
    guidance. Labels are one-hot (N, K) as elsewhere in lowdiff; an all-zero row is the null
    class; the training loss drops labels that way (`lowdiff.diffusion.loss.drop_labels`)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.empty(num_classes + 1, dim))

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        onehot = onehot.to(self.table.dtype)
        null = 1 - onehot.sum(dim=1, keepdim=True)
        return onehot @ self.table[:-1] + null * self.table[-1]


def unpatchify(tokens: torch.Tensor, grid: int, patch: int, channels: int) -> torch.Tensor:
    """(N, T, p*p*C) -> (N, C, g*p, g*p); each token holds its patch as (p, p, C)."""
    n = tokens.shape[0]
    x = tokens.reshape(n, grid, grid, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, channels, grid * patch, grid * patch)


# ---------------------------------------------------------------------------------------

class UnifiedDiT(nn.Module):
    """LightningDiT-style transformer serving every latent side in `cfg.resolutions`.

    forward(x, noise_labels, class_labels=None, augment_labels=None, cond=None,
            cond_noise_labels=None), the UnifiedUNet signature: x (N, C, r, r), noise_labels
    the flow time t (N,), class_labels one-hot (N, K) with all-zero rows for the null class.
    Resolutions above `cfg.base_resolution` need `cond` (N, C, r, r).
    """
    # The parts `baseline.load_baseline` sets: per-resolution stems, resolution and condition-noise embeddings.
    STEM, RES_EMBED, COND_NOISE_EMBED = "x_embed", "res_embed", "cond_noise_embed"

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        D, p = cfg.hidden_size, cfg.patch_size
        self.head_dim = D // cfg.num_heads
        res = sorted(cfg.resolutions)
        conditioned = any(r > cfg.base_resolution for r in res)

        self.t_embed = nn.Sequential(nn.Linear(FREQ_DIM, D), nn.SiLU(), nn.Linear(D, D))
        self.label_embed = LabelEmbedder(cfg.label_dim, D) if cfg.label_dim else None
        self.res_embed = nn.Linear(len(res), D) if len(res) > 1 else None
        self.cond_noise_embed = (nn.Linear(FREQ_DIM, FREQ_DIM, bias=False)
                                 if conditioned and cfg.cond_noise_embedding else None)
        self.x_embed = nn.ModuleDict({
            res_key(r): nn.Conv2d(cfg.in_channels * (2 if r > cfg.base_resolution else 1), D, p, stride=p)
            for r in res})
        self.pos_embed = nn.ParameterDict({
            res_key(r): nn.Parameter(sincos_table(r // p, D), requires_grad=False) for r in res})
        hidden = int(2 / 3 * cfg.mlp_ratio * D)
        self.blocks = nn.ModuleList([DiTBlock(D, cfg.num_heads, hidden, cfg.qk_norm) for _ in range(cfg.depth)])
        self.final = nn.ModuleDict({res_key(r): FinalLayer(D, p * p * cfg.out_channels) for r in res})
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Spec 1.3: Xavier-uniform Linear weights and zero biases; patch embeddings Xavier
        on the flattened kernel; label table and time MLP normal(0, 0.02) (also the new
        resolution and condition-noise embeddings); adaLN and output layers zero, so the
        network outputs exactly 0 at initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in self.x_embed.values():
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        normal = [self.t_embed[0].weight, self.t_embed[2].weight]
        normal += [m.weight for m in (self.res_embed, self.cond_noise_embed) if m is not None]
        normal += [self.label_embed.table] if self.label_embed is not None else []
        for w in normal:
            nn.init.normal_(w, std=0.02)
        zero = [b.ada for b in self.blocks] + [f.ada for f in self.final.values()]
        zero += [f.linear for f in self.final.values()]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -----------------------------------------------------------------------------------

    def embed(self, noise_labels: torch.Tensor, resolution: int, class_labels=None,
              cond_noise_labels=None) -> torch.Tensor:
        """The conditioning vector c = t_emb(freq(t) [+ proj(freq(t_cond))]) + y_emb + r_emb."""
        freq = timestep_frequencies(noise_labels)
        if self.cond_noise_embed is not None and cond_noise_labels is not None:
            freq = freq + self.cond_noise_embed(timestep_frequencies(cond_noise_labels))
        c = self.t_embed(freq)
        if self.label_embed is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels (one-hot, "
                                 f"shape [N, {self.cfg.label_dim}]; all zeros = the null class)")
            c = c + self.label_embed(class_labels)
        if self.res_embed is not None:
            index = sorted(self.cfg.resolutions).index(resolution)
            onehot = F.one_hot(torch.full((c.shape[0],), index, device=c.device), len(self.cfg.resolutions))
            c = c + self.res_embed(onehot.to(c.dtype))
        return c

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels=None, augment_labels=None,
                cond: torch.Tensor | None = None, cond_noise_labels: torch.Tensor | None = None) -> torch.Tensor:
        r, cfg = x.shape[-1], self.cfg                             # x: (N, C, r, r)
        if res_key(r) not in self.x_embed or x.shape[-2] != r:
            raise ValueError(f"input of shape {tuple(x.shape)}: this network serves square latents of sides "
                             f"{sorted(cfg.resolutions)}")
        if r > cfg.base_resolution:
            if cond is None:
                raise ValueError(f"resolution {r} is conditioned on the upsampled lower-resolution latent: pass cond")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)            # (N, 2C, r, r): noisy latent + condition
        grid = r // cfg.patch_size                                 # g = r / p, T = g^2 tokens
        tokens = self.x_embed[res_key(r)](x).flatten(2).transpose(1, 2) + self.pos_embed[res_key(r)]   # (N, T, D)
        c = self.embed(noise_labels, r, class_labels, cond_noise_labels)                               # (N, D)
        rope = rope_angles(grid, self.head_dim, device=x.device) if cfg.rope else None   # (T, head_dim / 2)
        for block in self.blocks:
            tokens = block(tokens, c, rope)                        # (N, T, D)
        return unpatchify(self.final[res_key(r)](tokens, c), grid, cfg.patch_size, cfg.out_channels)  # (N, C_out, r, r)

    def subnetwork_parameters(self, resolution: int) -> list[str]:
        """Names of the parameters a forward pass at `resolution` can touch."""
        own = {f"{part}.{res_key(resolution)}" for part in ("x_embed", "pos_embed", "final")}
        shared = ("blocks.", "t_embed.", "label_embed.", "res_embed.")
        shared += ("cond_noise_embed.",) if resolution > self.cfg.base_resolution else ()
        return [n for n, _ in self.named_parameters()
                if n.startswith(shared) or any(n == o or n.startswith(o + ".") for o in own)]
