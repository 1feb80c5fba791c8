"""`lowdiff vae train`: a small KL-regularised autoencoder (diffusers `AutoencoderKL`, the
LDM "KL-f4" kind) for the latent presets, trained on any image dataset lowdiff reads.

Objective (LDM's autoencoder loss without its perceptual and adversarial terms): per image,
the L1 reconstruction error summed over pixels plus `kl_weight` times the KL divergence of
the diagonal-Gaussian posterior from N(0, I), summed over latent dimensions; the decoder
sees a posterior sample. Training is deterministic per seed (data order and posterior noise
from generators seeded by (seed, step)) and resumable: re-running the same command continues
from the newest training state in `out/checkpoints/`. The result is a diffusers model
directory (config.json + diffusion_pytorch_model.safetensors) that `load_vae`,
`lowdiff dataset encode --vae DIR` and latent models read.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import storage
from ..data.base import ImageDataset
from ..data.vae import autoencoder_kl_class, downsampling_factor
from ..errors import ConfigError, WriteError
from ..fields import jsonable
from ..files import FILE_MODE, write_json
from ..seeds import derived_seed
from .common import DataStream, StopRequest, load_optimizer, optimizer_tensors


@dataclass
class VAEConfig:
    """The autoencoder: len(block_out_channels) - 1 halvings of the side (3 blocks = f4)."""
    in_channels: int = 1
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 0                  # GroupNorm groups; 0 = the largest of 32, 16, ... dividing every width
    mid_attention: bool = True

    @property
    def factor(self) -> int:
        return downsampling_factor(self.block_out_channels)

    @property
    def groups(self) -> int:
        if self.norm_num_groups:
            return self.norm_num_groups
        return next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in self.block_out_channels))

    def build(self):
        if len(self.block_out_channels) < 2:
            raise ConfigError(f"block_out_channels {self.block_out_channels}: need at least two levels (one halving)")
        if any(c % self.groups for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels {self.block_out_channels} must be multiples of norm_num_groups "
                              f"{self.groups}")
        n = len(self.block_out_channels)
        return autoencoder_kl_class()(in_channels=self.in_channels, out_channels=self.in_channels,
                                 down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                                 block_out_channels=tuple(self.block_out_channels),
                                 layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
                                 norm_num_groups=self.groups, mid_block_add_attention=self.mid_attention)


@dataclass
class VAETrainConfig:
    batch: int = 64
    lr: float = 1e-3
    duration_kimg: float = 300
    kl_weight: float = 1e-5
    seed: int = 0
    log_kimg: float = 5
    checkpoint_kimg: float = 20
    keep_checkpoints: int = 2


def vae_loss(vae, images: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None):
    """loss = mean_batch(sum_pixels |x - x'| + w KL), and for the log: the PSNR of the
    reconstructions (dB, peak-to-peak 2 of [-1, 1]) and the KL per latent dimension."""
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    l1 = (recon - images).abs().flatten(1).sum(1)
    kl = posterior.kl()
    loss = (l1 + kl_weight * kl).mean()
    psnr = 10 * torch.log10(4 / (recon - images).detach().pow(2).mean().clamp_min(1e-12))
    return loss, psnr, kl.detach().mean() / posterior.mean[0].numel()


class VAETrainer:
    def __init__(self, model: VAEConfig, train: VAETrainConfig, dataset: ImageDataset, out: str | Path,
                 device: str = "cpu"):
        if dataset.channels != model.in_channels:
            raise ConfigError(f"dataset {dataset.name} has {dataset.channels} channel(s), the VAE takes "
                              f"{model.in_channels}")
        if dataset.resolution % model.factor:
            raise ConfigError(f"{dataset.resolution}x{dataset.resolution} images do not divide by the VAE's "
                              f"factor {model.factor}")
        for name in ("batch", "duration_kimg", "lr"):
            if getattr(train, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(train, name)}")
        self.model_cfg, self.cfg, self.ds, self.out = model, train, dataset, Path(out)
        self.device = torch.device(device)
        torch.manual_seed(train.seed)
        self.vae = model.build().to(self.device).train()
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=train.lr)
        self.stream = DataStream(len(dataset), train.seed)
        self.step, self.nimg, self.stopped_by = 0, 0, None

    def signature(self) -> dict:
        """What must not change across a resume."""
        t = jsonable(self.cfg)
        for key in ("duration_kimg", "log_kimg", "checkpoint_kimg", "keep_checkpoints"):
            t.pop(key)
        return {"model": jsonable(self.model_cfg), "train": t, "data": self.ds.name}

    def save_state(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.vae.state_dict().items()} | optimizer_tensors(self.opt)
        meta = dict(nimg=self.nimg, epoch=self.stream.epoch, position=self.stream.position,
                    param_groups=self.opt.state_dict()["param_groups"], signature=self.signature())
        storage.save_state(self.out, self.step, tensors, meta, keep=self.cfg.keep_checkpoints)

    def try_resume(self) -> bool:
        found = storage.load_latest_state(self.out)
        if found is None:
            return False
        tensors, meta = found
        if "signature" not in meta:
            raise ConfigError(f"{self.out} holds the training states of a diffusion model (`lowdiff train`), not of "
                              "a VAE; use a new --out directory")
        if meta["signature"] != json.loads(json.dumps(self.signature())):
            raise ConfigError(f"{self.out} holds a VAE run with other settings; use a new --out or the same options")
        self.vae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer(self.opt, tensors, meta["param_groups"], self.device)
        self.step, self.nimg = meta["step"], meta["nimg"]
        self.stream.epoch, self.stream.position = meta["epoch"], meta["position"]
        return True

    def train_step(self) -> tuple[float, float, float]:
        """(loss, PSNR of the batch's reconstructions, KL per latent dimension)."""
        c = self.cfg
        idx = self.stream.next(c.batch)
        images = torch.from_numpy(self.ds.images[idx.numpy()]).to(self.device, torch.float32) / 127.5 - 1
        gen = torch.Generator(self.device).manual_seed(derived_seed(c.seed, self.step + 1))
        loss, psnr, kl = vae_loss(self.vae, images, c.kl_weight, gen)
        if not torch.isfinite(loss):
            raise ConfigError(f"non-finite VAE loss at step {self.step}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        self.nimg += c.batch
        return loss.item(), psnr.item(), kl.item()

    def run(self, progress: bool = True) -> Path:
        c = self.cfg
        total = int(c.duration_kimg * 1000)
        resumed = self.try_resume()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "vae_training.json", {"model": jsonable(self.model_cfg), "train": jsonable(c),
                                                            "data": self.ds.name})
        log_every, ckpt_every = (max(1, round(k * 1000 / c.batch)) for k in (c.log_kimg, c.checkpoint_kimg))
        bar = tqdm(total=total, initial=min(self.nimg, total), unit="img", disable=not progress,
                   desc="train vae" + (" (resumed)" if resumed else ""), smoothing=0.05)
        start, start_nimg, window = time.time(), self.nimg, []
        with open(self.out / "log.jsonl", "a") as log, StopRequest() as stop:
            while self.nimg < total and stop.signal is None:
                window.append(self.train_step())
                bar.update(c.batch)
                if self.step % log_every == 0 or self.nimg >= total:
                    loss, psnr, kl = (sum(v) / len(window) for v in zip(*window))
                    elapsed = time.time() - start
                    log.write(json.dumps({"step": self.step, "kimg": self.nimg / 1000, "loss": loss, "psnr": psnr,
                                          "kl_per_dim": kl,
                                          "images_per_s": round((self.nimg - start_nimg) / max(elapsed, 1e-9), 1)})
                                 + "\n")
                    log.flush()
                    bar.set_postfix(psnr=f"{psnr:.2f}", kl=f"{kl:.2f}")
                    window.clear()
                if self.step % ckpt_every == 0:
                    self.save_state()
        bar.close()
        self.save_state()
        self.stopped_by = stop.signal
        if stop.signal is not None:                # SIGTERM / Ctrl-C: the state is saved, no model yet
            tqdm.write(f"received signal {stop.signal}: state saved at step {self.step}; re-run the same command to "
                       "resume", file=sys.stderr)
            return self.out
        save_vae(self.vae, self.out)
        return self.out


def save_vae(vae, out: Path) -> None:
    """The diffusers model directory (config.json + diffusion_pytorch_model.safetensors), world-readable,
    each file written whole: diffusers writes into a scratch folder, whose files are renamed into `out`."""
    scratch = out / ".vae-save.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        vae.save_pretrained(scratch, safe_serialization=True)
        for name in ("diffusion_pytorch_model.safetensors", "config.json"):
            (scratch / name).chmod(FILE_MODE)
            os.replace(scratch / name, out / name)
    except OSError as e:
        raise WriteError(f"{out}: the VAE could not be written ({e.strerror or e}); free some space") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_vae(dataset: ImageDataset, out: str | Path, model: VAEConfig | None = None,
              train: VAETrainConfig | None = None, device: str = "cpu", progress: bool = True) -> VAETrainer:
    model = model or VAEConfig(in_channels=dataset.channels)
    trainer = VAETrainer(model, train or VAETrainConfig(), dataset, out, device)
    trainer.run(progress)
    return trainer


def replace(cfg, **changes):
    """`dataclasses.replace` keeping only the changes that are not None (unset CLI options)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
