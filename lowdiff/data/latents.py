"""VAE latents for the latent-space presets (LightningDiT Sec. 4: VA-VAE latents, normalised per channel); the
autoencoders themselves are in lowdiff/data/vae.py.

- `encode_dataset` (`lowdiff dataset encode`): every image and its horizontal mirror are
  encoded once (a posterior sample z = mu + sigma eps, frozen, as LightningDiT extracts);
  the lower resolutions of the cascade are made by the pyramid (2x2 box filter) from the
  top latents; everything goes into safetensors shards with a `latents.json` manifest
  holding per-resolution, per-channel mean/std of the unflipped latents.
- `LatentDataset`: the shards, memory-mapped; batches are pyramids {r: z_r} normalised
  as the preset's `LatentConfig` says, the mirror twin chosen by the flip mask.
- `LatentDecoder`: normalised top-resolution latents -> images in [-1, 1].

diffusers is imported lazily: the rest of lowdiff works without it.
"""
from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from .. import bundled
from ..config import LatentConfig
from ..diffusion import pyramid
from ..errors import ConfigError
from ..files import atomic_write, read_json, write_text
from .base import LATENT_MANIFEST, DatasetError, ImageDataset
from .vae import load_vae, to_vae_input

FORMAT = "lowdiff-latents/1"


# ---------------------------------------------------------------------------------------
# Normalisation (LightningDiT's latent statistics): per resolution, per channel.

def _affine(latent: LatentConfig, resolution: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, scale) with z_n = (z - mean) * scale."""
    stats = latent.stats.get(str(resolution))
    if latent.norm == "scale":
        return torch.zeros((), device=device, dtype=dtype), torch.tensor(latent.multiplier, device=device, dtype=dtype)
    if stats is None:
        raise DatasetError(f"no latent statistics for resolution {resolution}: train on a dataset made by "
                           "`lowdiff dataset encode`, which stores them")
    shape = (1, -1, 1, 1)
    mean = torch.tensor(stats["mean"], device=device, dtype=dtype).reshape(shape)
    std = torch.tensor(stats["std"], device=device, dtype=dtype).reshape(shape)
    return mean, latent.multiplier / std


def normalize(z: torch.Tensor, latent: LatentConfig) -> torch.Tensor:
    mean, scale = _affine(latent, z.shape[-1], z.device, z.dtype)
    return (z - mean) * scale


def denormalize(z: torch.Tensor, latent: LatentConfig) -> torch.Tensor:
    mean, scale = _affine(latent, z.shape[-1], z.device, z.dtype)
    return z / scale + mean


# ---------------------------------------------------------------------------------------
# Encoding.

def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """ADM's resize of square images: halve with a box filter while >= 2x the target, then bicubic."""
    if images.shape[-1] == size:
        return images
    out = []
    for img in images:
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        while pil.size[0] >= 2 * size:
            pil = pil.resize((pil.size[0] // 2, pil.size[1] // 2), Image.BOX)
        arr = np.asarray(pil.resize((size, size), Image.BICUBIC))
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out)


class _Stats:
    """Running per-channel mean and std (float64 sums) of one resolution."""

    def __init__(self):
        self.n, self.s1, self.s2 = 0, 0.0, 0.0

    def add(self, z: torch.Tensor) -> None:
        z = z.double()
        self.n += z.shape[0] * z.shape[2] * z.shape[3]
        self.s1 = self.s1 + z.sum(dim=(0, 2, 3))
        self.s2 = self.s2 + z.pow(2).sum(dim=(0, 2, 3))

    def result(self) -> dict[str, list[float]]:
        mean = self.s1 / self.n
        std = (self.s2 / self.n - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-8)
        return {"mean": mean.tolist(), "std": std.tolist()}


def latent_resolutions(top: int, lowest: int) -> list[int]:
    """top, top/2, ..., lowest: the cascade's latent sides."""
    if lowest < 1 or lowest > top or top % lowest or (top // lowest) & (top // lowest - 1):
        raise DatasetError(f"lowest latent resolution {lowest} must be top ({top}) divided by a power of two")
    return [top >> i for i in range(int(math.log2(top // lowest)) + 1)]


@torch.no_grad()
def encode_dataset(ds: ImageDataset, vae_path: str | Path, out: str | Path, *, image_resolution: int | None = None,
                   lowest: int | None = None, batch: int = 64, shard_size: int = 10_000, seed: int = 0,
                   device: str = "cpu", progress: bool = True) -> dict:
    """Encode `ds` (and its mirror images) with the VAE into `out`; returns the manifest."""
    from tqdm import tqdm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae = load_vae(vae_path, device)
    size = image_resolution or ds.resolution
    channels = vae.config.in_channels
    gen = torch.Generator(device).manual_seed(seed)
    res = stats = None
    shards, buffer = [], {}
    for start in tqdm(range(0, len(ds), batch), desc="encode", unit="batch", disable=not progress):
        x = to_vae_input(_resize(ds.images[start:start + batch], size), channels, device)
        twins = {"": vae.encode(x).latent_dist.sample(gen), "_flip": vae.encode(x.flip(-1)).latent_dist.sample(gen)}
        if res is None:
            top = twins[""].shape[-1]
            res = latent_resolutions(top, lowest or top // 2)
            stats = {r: _Stats() for r in res}
        for r in res:
            for suffix, z in twins.items():
                buffer.setdefault(f"latents_{r}{suffix}", []).append(pyramid.downsample(z, r).float().cpu())
            stats[r].add(buffer[f"latents_{r}"][-1])
        if ds.labels is not None:
            buffer.setdefault("labels", []).append(torch.from_numpy(ds.labels[start:start + batch]).long())
        while _rows(buffer) >= shard_size or (buffer and start + batch >= len(ds)):
            buffer = _write_shard(out, len(shards), buffer, shard_size, shards)
    vae_spec = str(vae_path) if str(vae_path).startswith(bundled.PREFIX) else str(Path(vae_path).resolve())
    manifest = {"format": FORMAT, "source": ds.name, "vae": vae_spec, "seed": seed,
                "image_resolution": size, "image_channels": ds.channels, "latent_channels": vae.config.latent_channels,
                "resolutions": res, "count": len(ds), "num_classes": ds.num_classes if ds.labels is not None else 0,
                "class_names": ds.class_names, "shards": shards,
                "stats": {str(r): s.result() for r, s in stats.items()}}
    write_text(out / LATENT_MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _rows(buffer: dict[str, list[torch.Tensor]]) -> int:
    return sum(len(t) for t in next(iter(buffer.values()), []))


def _write_shard(out: Path, index: int, buffer: dict[str, list[torch.Tensor]], size: int,
                 shards: list[dict]) -> dict[str, list[torch.Tensor]]:
    """Write the first `size` buffered rows as shard `index`; returns the rest."""
    tensors = {k: torch.cat(v) for k, v in buffer.items()}
    name = f"latents-{index:05d}.safetensors"
    shard = {k: v[:size].contiguous() for k, v in tensors.items()}
    atomic_write(out / name, lambda p: save_file(shard, str(p)))
    shards.append({"file": name, "count": min(size, len(next(iter(tensors.values()))))})
    return {k: [v[size:]] for k, v in tensors.items() if len(v) > size}


# ---------------------------------------------------------------------------------------
# Reading.

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def _map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Zero-copy read-only arrays over a safetensors file (8-byte header length, JSON
    header with dtype / shape / data_offsets, raw little-endian data)."""
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (length,) = struct.unpack("<Q", mm[:8])
        header = json.loads(mm[8:8 + length])
        base, arrays = 8 + length, {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise DatasetError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            arrays[name] = np.frombuffer(mm, dtype=_DTYPES[info["dtype"]], count=(end - begin) // np.dtype(
                _DTYPES[info["dtype"]]).itemsize, offset=base + begin).reshape(info["shape"])
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable latent shard (truncated or corrupt: {type(e).__name__}); "
                           "encode the dataset again (`lowdiff dataset encode`)") from None
    return arrays


class LatentDataset:
    """A directory written by `encode_dataset`: shards of latents at every cascade
    resolution (and their mirror twins), labels and statistics. The attributes the trainer
    checks (name, resolution, channels, labels, num_classes, class_names) mirror
    ImageDataset's, with resolution/channels those of the top latent."""
    latent = True                        # a pyramid of VAE latents, not images (ImageDataset.latent)

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        path = self.directory / LATENT_MANIFEST
        try:
            self.manifest = read_json(path)
        except (OSError, ConfigError) as e:
            raise DatasetError(f"{path}: cannot read the latent manifest ({e})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a {FORMAT} manifest")
        m = self.manifest
        self.shards = [_map_safetensors(self.directory / s["file"]) for s in m["shards"]]
        self.offsets = np.cumsum([0] + [s["count"] for s in m["shards"]])
        self.resolutions = list(m["resolutions"])
        self.name = f"latents of {m['source']}"
        self.resolution, self.channels = self.resolutions[0], m["latent_channels"]
        self.labels = np.concatenate([s["labels"] for s in self.shards]) if m["num_classes"] else None
        self.num_classes = m["num_classes"]
        self.class_names = m["class_names"]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"LatentDataset({self.name!r}, {len(self)} x {self.channels}x{self.resolutions} latents)"

    def latent_config(self, base: LatentConfig | None = None) -> LatentConfig:
        """The preset's LatentConfig completed with this dataset's VAE and statistics."""
        m = self.manifest
        base = base or LatentConfig()
        return LatentConfig(vae=m["vae"], image_resolution=m["image_resolution"], image_channels=m["image_channels"],
                            norm=base.norm, multiplier=base.multiplier, stats=m["stats"])

    def check(self, resolutions: list[int]) -> None:
        """The dataset must hold latents at every cascade resolution."""
        missing = sorted(set(resolutions) - set(self.resolutions))
        if missing:
            raise DatasetError(f"{self.directory} holds latents at {self.resolutions}, not at {missing}; re-encode "
                               f"with `lowdiff dataset encode --lowest {min(resolutions)}`")

    def rows(self, key: str, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (global indices) of one stored tensor, gathered across shards."""
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        first = self.shards[0][key]
        out = np.empty((len(idx), *first.shape[1:]), dtype=first.dtype)
        for s in np.unique(shard):
            pick = shard == s
            out[pick] = self.shards[s][key][idx[pick] - self.offsets[s]]
        return out

    def pyramid(self, idx: np.ndarray, flip: torch.Tensor | None, resolutions: list[int], latent: LatentConfig,
                device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
        """Normalised latents {r: (N, C, r, r)}; rows with flip set take the mirror twin."""
        out = {}
        for r in resolutions:
            z = torch.from_numpy(self.rows(f"latents_{r}", idx)).to(device)
            if flip is not None:
                mirror = torch.from_numpy(self.rows(f"latents_{r}_flip", idx)).to(device)
                z = torch.where(flip.to(device)[:, None, None, None], mirror, z)
            out[r] = normalize(z.float(), latent)
        return out


# ---------------------------------------------------------------------------------------
# Decoding samples.

class LatentDecoder:
    """Normalised top-resolution latents -> images in [-1, 1] with the preset's VAE."""

    def __init__(self, latent: LatentConfig, device: str | torch.device = "cpu", vae: str | Path | None = None):
        path = vae or latent.vae
        if not path:
            raise DatasetError("this latent model names no VAE: pass --vae (the VAE its latents were encoded with)")
        self.latent, self.device = latent, torch.device(device)
        self.vae = load_vae(path, self.device)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, batch: int = 16) -> torch.Tensor:
        z = denormalize(z.to(self.device, torch.float32), self.latent)
        return torch.cat([self.vae.decode(z[i:i + batch]).sample.float() for i in range(0, len(z), batch)])
