"""The training loop: Adam with a linear learning-rate ramp-up, EMA, the multi-resolution
loss, periodic resumable states (re-running the same command resumes) and a final model
directory. Single process here; `lowdiff.train.distributed` adds torchrun/DDP.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import ConfigError, Preset
from ..data import ImageDataset
from ..diffusion.denoiser import Denoiser
from ..diffusion.loss import multires_loss
from . import checkpoint as ckpt
from .ema import ema_beta, update_ema


class TrainingError(RuntimeError):
    pass


@dataclass
class DataStream:
    """Deterministic epoch-wise shuffling; (epoch, position) is the whole state."""
    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=g)

    def next(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            order = self._order()
            take = order[self.position:self.position + n]
            out.append(take)
            n -= len(take)
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(out)


def check_dataset(preset: Preset, ds: ImageDataset) -> None:
    net = preset.network
    if ds.resolution != net.img_resolution:
        raise ConfigError(f"dataset {ds.name} is {ds.resolution}x{ds.resolution} but preset {preset.name} "
                          f"generates {net.img_resolution}x{net.img_resolution}; resize the data or pick a preset")
    if ds.channels != net.in_channels:
        raise ConfigError(f"dataset {ds.name} has {ds.channels} channel(s), preset {preset.name} expects "
                          f"{net.in_channels}")
    if net.label_dim and (ds.labels is None or ds.num_classes > net.label_dim):
        raise ConfigError(f"preset {preset.name} is class-conditional with {net.label_dim} classes but dataset "
                          f"{ds.name} has {'no labels' if ds.labels is None else f'{ds.num_classes} classes'}")


def batch_tensors(ds: ImageDataset, idx: torch.Tensor, label_dim: int, xflip: torch.Tensor | None, device):
    images = torch.from_numpy(ds.images[idx.numpy()]).to(device=device, dtype=torch.float32) / 127.5 - 1
    if xflip is not None:
        images = torch.where(xflip[:, None, None, None].to(device), images.flip(-1), images)
    labels = None
    if label_dim:
        labels = F.one_hot(torch.from_numpy(ds.labels[idx.numpy()]).long(), label_dim).float().to(device)
    return images, labels


def training_signature(preset: Preset) -> str:
    """What must not change across a resume: everything but duration, logging and sampling."""
    d = json.loads(preset.to_json())
    for key in ("duration_kimg", "log_kimg", "checkpoint_kimg", "keep_checkpoints"):
        d["train"].pop(key)
    return json.dumps({k: d[k] for k in ("network", "train", "precond", "unified", "cond_scaling")}, sort_keys=True)


class Trainer:
    """Owns the model, EMA, optimizer, RNGs and data position of one run."""

    def __init__(self, preset: Preset, dataset: ImageDataset, run_dir: str | Path, device: str = "cpu"):
        preset.validate()
        check_dataset(preset, dataset)
        self.preset, self.ds, self.run_dir, self.device = preset, dataset, Path(run_dir), torch.device(device)
        t = preset.train
        torch.manual_seed(t.seed)
        self.model = Denoiser(preset).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
        self.noise_gen = torch.Generator(self.device).manual_seed(t.seed + 1)
        self.stream = DataStream(len(dataset), t.seed)
        self.step, self.nimg = 0, 0

    # --- state ---------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        for i, s in self.opt.state_dict()["state"].items():
            out |= {f"optim.{i}.{k}": torch.as_tensor(v) for k, v in s.items()}
        out["rng.torch"] = torch.get_rng_state()
        out["rng.noise"] = self.noise_gen.get_state()
        return out

    def save_state(self) -> None:
        meta = dict(nimg=self.nimg, epoch=self.stream.epoch, position=self.stream.position,
                    param_groups=self.opt.state_dict()["param_groups"], preset=self.preset.to_dict())
        ckpt.save_state(self.run_dir, self.step, self.state_tensors(), meta, keep=self.preset.train.keep_checkpoints)

    def try_resume(self) -> bool:
        found = ckpt.load_latest_state(self.run_dir)
        if found is None:
            return False
        tensors, meta = found
        if training_signature(Preset.from_dict(meta["preset"])) != training_signature(self.preset):
            raise ConfigError(f"{self.run_dir} holds a run of a different configuration; use a new --out "
                              "directory or the same options as before")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        opt_state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                opt_state.setdefault(int(i), {})[name] = v
        self.opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.noise_gen.set_state(tensors["rng.noise"])
        self.step, self.nimg = meta["step"], meta["nimg"]
        self.stream.epoch, self.stream.position = meta["epoch"], meta["position"]
        return True

    # --- one optimisation step ---------------------------------------------------------------
    def train_step(self) -> dict[int, float]:
        t, net = self.preset.train, self.preset.network
        idx = self.stream.next(t.batch)
        flip = (torch.rand(t.batch, generator=self.noise_gen, device=self.device) < 0.5) if t.xflip else None
        images, labels = batch_tensors(self.ds, idx, net.label_dim, flip, self.device)
        loss, per_res = multires_loss(self.model, images, labels, weights=t.loss_weights, generator=self.noise_gen)
        if not torch.isfinite(loss):
            bad = [r for r, v in per_res.items() if not torch.isfinite(v)]
            raise TrainingError(f"non-finite loss at step {self.step} (resolution {bad}); the last good "
                                f"checkpoint is kept in {self.run_dir / ckpt.STATE_DIR}. Lower the learning rate.")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = t.lr * min(self.nimg / max(t.lr_rampup_kimg * 1000, 1e-8), 1) if t.lr_rampup_kimg else t.lr
        for g in self.opt.param_groups:
            g["lr"] = lr
        for p in self.model.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        self.opt.step()
        self.nimg += t.batch
        self.step += 1
        update_ema(self.ema, self.model, ema_beta(t.batch, self.nimg, t.ema_halflife_kimg, t.ema_rampup_ratio))
        return {r: v.item() for r, v in per_res.items()}

    # --- the loop --------------------------------------------------------------------------
    def run(self, duration_kimg: float | None = None, progress: bool = True) -> Path:
        t = self.preset.train
        total = int((duration_kimg or t.duration_kimg) * 1000)
        resumed = self.try_resume()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "training_options.json").write_text(self.preset.to_json())
        log_every = max(1, round(t.log_kimg * 1000 / t.batch))
        ckpt_every = max(1, round(t.checkpoint_kimg * 1000 / t.batch))
        bar = tqdm(total=total, initial=min(self.nimg, total), unit="img", disable=not progress,
                   desc=f"train {self.preset.name}" + (" (resumed)" if resumed else ""))
        window: list[dict[int, float]] = []
        start = time.time()
        with open(self.run_dir / "log.jsonl", "a") as log:
            while self.nimg < total:
                window.append(self.train_step())
                bar.update(t.batch)
                if self.step % log_every == 0 or self.nimg >= total:
                    mean = {r: float(np.mean([w[r] for w in window])) for r in window[0]}
                    record = {"step": self.step, "kimg": self.nimg / 1000, "seconds": round(time.time() - start, 1),
                              "loss": sum(mean.values()), **{f"loss_{r}": v for r, v in mean.items()}}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.1f}")
                    window.clear()
                if self.step % ckpt_every == 0:
                    self.save_state()
        bar.close()
        self.save_state()
        ckpt.save_model(self.run_dir, self.preset, self.ema.state_dict())
        return self.run_dir


def train(preset: Preset, dataset: ImageDataset, run_dir: str | Path, device: str = "cpu",
          duration_kimg: float | None = None, progress: bool = True) -> Path:
    """Train (or resume) a run in `run_dir`; returns the model directory."""
    return Trainer(preset, dataset, run_dir, device).run(duration_kimg, progress)
