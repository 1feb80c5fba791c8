"""The training loop: Adam with a linear learning-rate ramp-up, EMA, the multi-resolution
loss, mixed precision, torchrun/DDP, and resumable states (re-running the same command
resumes; SIGTERM/SIGINT write a state and exit cleanly).

Scaling out: launch with `torchrun --nproc_per_node=N -m lowdiff.cli train ...`. The global
batch is split across ranks and, when `batch_gpu` is smaller, into accumulation rounds.
Every rank draws the same global data order and the same global noise (from a generator
seeded by (seed, step)) and keeps its own rows, so a run gives the same result, up to
float rounding, however it is split. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import importlib.util
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .. import inference, storage
from ..config import Preset
from ..data import ImageDataset
from ..diffusion.consistency import ConsistencyObjective, named_plans
from ..diffusion.denoiser import Denoiser
from ..diffusion.loss import BatchNoise, LossModule
from ..distributed import close_distributed, init_distributed
from ..plans import PLANS_FILE, ModelPlans, NamedPlan
from .common import DataStream, StopRequest, load_optimizer, optimizer_tensors
from .init_from import Baseline
from .compute import LOG_FILE, RecordedCompute, threads_in_use, training_tflop
from .snapshots import SNAPSHOT_DIR, interval_images, is_due, write_snapshot
from ..errors import ConfigError
from ..files import write_json
from ..seeds import MAX_SEED, derived_seed
from .ema import ema_beta, update_ema


class TrainingError(RuntimeError):
    pass


def check_dataset(preset: Preset, ds: ImageDataset) -> None:
    net = preset.network
    latent = ds.latent
    if (preset.latent is not None) != latent:
        raise ConfigError(f"preset {preset.name} works on {'VAE latents' if preset.latent else 'images'} but dataset "
                          f"{ds.name} holds {'latents' if latent else 'images'}"
                          + ("; encode the images first with `lowdiff dataset encode`" if preset.latent else ""))
    if ds.resolution != net.img_resolution:
        raise ConfigError(f"dataset {ds.name} is {ds.resolution}x{ds.resolution} but preset {preset.name} "
                          f"generates {net.img_resolution}x{net.img_resolution}; resize the data or pick a preset")
    if ds.channels != net.in_channels:
        raise ConfigError(f"dataset {ds.name} has {ds.channels} channel(s), preset {preset.name} expects "
                          f"{net.in_channels}")
    if latent:           # after the top-resolution check, whose message fits a wrong top size
        ds.check(preset.resolutions)
    if net.label_dim and (ds.labels is None or ds.num_classes > net.label_dim):
        raise ConfigError(f"preset {preset.name} is class-conditional with {net.label_dim} classes but dataset "
                          f"{ds.name} has {'no labels' if ds.labels is None else f'{ds.num_classes} classes'}")


def check_same_data(run: RecordedCompute, ds: ImageDataset) -> None:
    """--match-compute RUN_DIR: a ConfigError unless `ds` is the dataset that run trained on (for
    logs written before the name was recorded: a dataset its network fits)."""
    where = f"--match-compute {run.run_dir}"
    if run.dataset is not None and run.dataset != ds.name:
        raise ConfigError(f"{where}: that run trained on {run.dataset}, this one on {ds.name}; "
                          "match the compute of a run of the same dataset")
    try:
        check_dataset(run.preset, ds)
    except ConfigError as e:
        raise ConfigError(f"{where}: a run of another dataset ({e})") from None


def record_dataset(preset: Preset, ds: ImageDataset) -> None:
    """What the model directory keeps of its training data: class names (grid labels) and,
    for latents, the VAE and statistics (so it decodes its samples on its own)."""
    if preset.network.label_dim and ds.class_names:
        preset.class_names = list(ds.class_names)
    if ds.latent:
        preset.latent = ds.latent_config(preset.latent)


def split_batch(batch: int, world: int, batch_gpu: int) -> tuple[int, int]:
    """(rows per rank, accumulation rounds); rejects splits that do not divide evenly."""
    if batch % world:
        raise ConfigError(f"batch {batch} is not divisible by the {world} processes; use a multiple of {world}")
    local = batch // world
    per_round = batch_gpu or local
    if local % per_round:
        raise ConfigError(f"per-process batch {local} is not divisible by batch_gpu {per_round}; "
                          "choose batch_gpu dividing it")
    return local, local // per_round


def training_signature(preset: Preset) -> dict:
    """What must not change across a resume: everything but duration, logging and sampling
    (compared as values, so 0 and 0.0 are equal)."""
    d = preset.to_dict()
    for key in ("duration_kimg", "log_kimg", "checkpoint_kimg", "keep_checkpoints"):
        d["train"].pop(key)
    return {k: d[k] for k in ("network", "train", "precond", "unified", "cond_scaling", "consistency")}


class Trainer:
    """Owns the model, EMA, optimizer, RNG state and data position of one run."""

    def __init__(self, preset: Preset, dataset: ImageDataset, run_dir: str | Path, device: str = "cpu",
                 restart: bool = False, init_from: Baseline | None = None, snapshot_kimg: float | None = None):
        """`preset`: validated (`Preset.validate`); `init_from`: the baseline a new run starts from
        (`--init-from`); a resumed run ignores it. `snapshot_kimg`: write the EMA as a model directory
        every so many kimg (lowdiff/train/snapshots.py)."""
        check_dataset(preset, dataset)
        record_dataset(preset, dataset)
        t = preset.train
        self.rank, self.world, self.device = init_distributed(device)
        self.local_batch, self.rounds = split_batch(t.batch, self.world, t.batch_gpu)
        self.preset, self.ds, self.run_dir = preset, dataset, Path(run_dir)
        torch.manual_seed(t.seed)
        self.model = Denoiser.from_preset(preset).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        # consistency tuning (lowdiff/diffusion/consistency.py) or the denoising loss
        self.objective = ConsistencyObjective(preset.consistency) if preset.consistency else None
        self.loss_fn = LossModule(torch.compile(self.model) if t.compile else self.model, t.loss_weights,
                                  preset.network.label_dropout, self.objective)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_fn = torch.nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=ids)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=tuple(t.adam_betas), eps=1e-8)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.stream = DataStream(len(dataset), t.seed)
        self.step, self.nimg = 0, 0
        training_tflop(preset, 0)                           # counts the FLOPs per image now, outside the timed loop
        self.thread_seconds, self.started = 0.0, None      # one-thread seconds before this process; its start
        self.restart, self.stopped_by = restart, None     # stopped_by: the signal that ended the run early
        self.init_from = init_from
        self.init_from_spec = init_from.spec if init_from is not None else None     # what the run started from
        self.snapshot_every = interval_images(snapshot_kimg) if snapshot_kimg else None
        torch.manual_seed((t.seed * 7919 + self.rank) % (MAX_SEED + 1))      # dropout differs per rank, as in EDM

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- state ---------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        out |= optimizer_tensors(self.opt)
        out["rng.torch"] = torch.get_rng_state()
        return out

    def save_state(self) -> None:
        if not self.is_main:
            return
        meta = dict(nimg=self.nimg, epoch=self.stream.epoch, position=self.stream.position,
                    param_groups=self.opt.state_dict()["param_groups"], scaler=self.scaler.state_dict(),
                    preset=self.preset.to_dict(), thread_seconds=self.spent_thread_seconds(),
                    init_from=self.init_from_spec)
        storage.save_state(self.run_dir, self.step, self.state_tensors(), meta,
                           keep=self.preset.train.keep_checkpoints)

    def try_resume(self) -> bool:
        if self.restart:
            if self.is_main:
                discard_run(self.run_dir)
            return False
        found = storage.load_latest_state(self.run_dir)
        if found is None:
            finished = [n for n in (storage.MODEL_FILE, LOG_FILE) if (self.run_dir / n).is_file()]
            if finished:
                raise ConfigError(f"{self.run_dir} holds {' and '.join(finished)} but no training state to resume "
                                  "from; pass --restart to train afresh (overwriting them) or use a new --out")
            return False
        tensors, meta = found
        if "preset" not in meta:
            raise ConfigError(f"{self.run_dir} holds training states of another kind (a `lowdiff vae train` run?); "
                              "use a new --out directory")
        if training_signature(Preset.from_dict(meta["preset"])) != training_signature(self.preset):
            raise ConfigError(f"{self.run_dir} holds a run of a different configuration; use a new --out "
                              "directory or the same options as before")
        started_from = meta.get("init_from")
        if self.init_from is not None and started_from != self.init_from.spec:
            raise ConfigError(f"--init-from {self.init_from.spec}: {self.run_dir} started from "
                              f"{started_from or 'scratch'}; resume it without --init-from, or use a new --out")
        self.init_from_spec = started_from
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        load_optimizer(self.opt, tensors, meta["param_groups"], self.device)
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        if self.world == 1:
            torch.set_rng_state(tensors["rng.torch"])
        self.step, self.nimg = meta["step"], meta["nimg"]
        self.thread_seconds = meta.get("thread_seconds", 0.0)     # states written before it was recorded: 0
        self.stream.epoch, self.stream.position = meta["epoch"], meta["position"]
        return True

    def start(self) -> bool:
        """Resume from the newest state in the run directory, else start afresh: from the baseline
        when `init_from` is given (model and EMA alike). True when resumed."""
        if self.try_resume():
            return True
        if self.init_from is not None:
            self.init_from.apply(self.model)
            self.ema.load_state_dict(self.model.state_dict())
            if self.is_main:
                tqdm.write(f"started from {self.init_from.spec}", file=sys.stderr)
        return False

    # --- one optimisation step ---------------------------------------------------------------
    def _rows(self, k: int) -> slice:
        per_round = self.local_batch // self.rounds
        start = self.rank * self.local_batch + k * per_round
        return slice(start, start + per_round)

    def _batch(self, idx: torch.Tensor, flip: torch.Tensor | None):
        net = self.preset.network
        if self.ds.latent:           # the latent pyramid {r: z_r}; flip picks the mirror twin
            images = self.ds.pyramid(idx.numpy(), flip, self.preset.resolutions, self.preset.latent, self.device)
        else:
            images = torch.from_numpy(self.ds.images[idx.numpy()]).to(self.device, torch.float32) / 127.5 - 1
            if flip is not None:
                images = torch.where(flip[:, None, None, None].to(self.device), images.flip(-1), images)
        labels = augment = None
        if net.label_dim:
            labels = F.one_hot(torch.from_numpy(self.ds.labels[idx.numpy()]), net.label_dim).float().to(self.device)
        if getattr(net, "augment_dim", 0):       # U-Nets only; no augmentation pipe yet: zero labels, as at sampling time
            augment = torch.zeros(len(idx), net.augment_dim, device=self.device)
        return images, labels, augment

    def train_step(self) -> dict[int, torch.Tensor]:
        t = self.preset.train
        idx = self.stream.next(t.batch)                     # the global batch, same on every rank
        step_gen = torch.Generator(self.device).manual_seed(derived_seed(t.seed, self.step + 1))
        flip = torch.rand(t.batch, generator=step_gen, device=self.device) < 0.5 if t.xflip else None
        noise_seed = int(torch.randint(1 << 62, (), generator=step_gen, device=self.device))
        autocast = inference.autocast(t.precision, self.device)
        if self.objective is not None:
            self.objective.nimg = self.nimg                 # where the step schedule is
        self.opt.zero_grad(set_to_none=True)
        per_res_sum: dict[int, torch.Tensor] = {}
        for k in range(self.rounds):
            rows = self._rows(k)
            images, labels, augment = self._batch(idx[rows], None if flip is None else flip[rows])
            noise = BatchNoise(torch.Generator(self.device).manual_seed(noise_seed), t.batch, rows, self.device)
            sync = self.world > 1 and k < self.rounds - 1
            with (self.loss_fn.no_sync() if sync else contextlib.nullcontext()), autocast:
                loss, per_res = self.loss_fn(images, labels, augment, noise)
            self.scaler.scale(loss / self.rounds).backward()
            for r, v in per_res.items():
                per_res_sum[r] = per_res_sum.get(r, 0) + v.detach() / self.rounds
        self._check_finite(per_res_sum)
        lr = t.lr * min(self.nimg / (t.lr_rampup_kimg * 1000), 1) if t.lr_rampup_kimg else t.lr
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.scaler.unscale_(self.opt)
        for p in self.model.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.nimg += t.batch
        self.step += 1
        update_ema(self.ema, self.model, ema_beta(t.batch, self.nimg, t.ema_halflife_kimg, t.ema_rampup_ratio))
        return per_res_sum

    def _check_finite(self, per_res: dict[int, torch.Tensor]) -> None:
        bad = [r for r, v in per_res.items() if not torch.isfinite(v)]
        if bad:
            raise TrainingError(f"non-finite loss at step {self.step} (kimg {self.nimg / 1000:.1f}) at resolution(s) "
                                f"{bad}; the last good state is kept in {self.run_dir / storage.STATE_DIR}. Lower the "
                                "learning rate or use fp32, then re-run the same command to resume from it.")

    def _mean_over_ranks(self, values: dict[int, float]) -> dict[int, float]:
        if self.world == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {r: v / self.world for r, v in zip(values, t.tolist())}

    # --- the loop --------------------------------------------------------------------------
    def run(self, duration_kimg: float | None = None, progress: bool = True) -> Path:
        t = self.preset.train
        total = int((duration_kimg or t.duration_kimg) * 1000)
        resumed = self.start()
        if self.world > 1:
            dist.barrier()      # every rank has read --out before rank 0 writes a file into it
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / storage.RUN_CONFIG_FILE, self.preset.to_dict())
            if self.preset.consistency is not None:
                write_consistency_plans(self.run_dir, self.preset)
        log_every = max(1, round(t.log_kimg * 1000 / t.batch))
        ckpt_every = max(1, round(t.checkpoint_kimg * 1000 / t.batch))
        bar = tqdm(total=total, initial=min(self.nimg, total), unit="img", disable=not (progress and self.is_main),
                   desc=f"train {self.preset.name}" + (" (resumed)" if resumed else ""), smoothing=0.05)
        window: list[dict[int, torch.Tensor]] = []
        start, start_nimg = time.time(), self.nimg
        self.started = start
        self.snapshot_if_due()                  # a resumed run whose state came before its due snapshot
        log = open(self.run_dir / LOG_FILE, "a") if self.is_main else None
        self.tensorboard = _tensorboard_writer(self.run_dir) if self.is_main else None
        try:
            with StopRequest() as stop:
                while self.nimg < total and stop.signal is None:
                    window.append(self.train_step())
                    bar.update(t.batch)
                    if self.step % log_every == 0 or self.nimg >= total:
                        self._log(window, log, bar, start, start_nimg)
                        window.clear()
                    self.snapshot_if_due()
                    if self.step % ckpt_every == 0:
                        self.save_state()
                self.save_state()
                if stop.signal is not None:
                    self.stopped_by = stop.signal
                    if self.is_main:
                        how = "the same command without --restart" if self.restart else "the same command"
                        tqdm.write(f"received signal {stop.signal}: state saved at step {self.step}; "
                                   f"re-run {how} to resume", file=sys.stderr)
                    return self.run_dir
        finally:
            bar.close()
            if log:
                log.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        if self.is_main:
            storage.save_pretrained(self.run_dir, self.preset, self.ema.state_dict())
        return self.run_dir

    def snapshot_if_due(self) -> None:
        """The EMA as RUN/snapshots/kimg-N when this step first reaches a multiple of the interval."""
        every, batch = self.snapshot_every, self.preset.train.batch
        if not (self.is_main and every and is_due(self.nimg, batch, every)):
            return
        compute = {"nimg": self.nimg, "step": self.step, **self.compute_so_far()}
        write_snapshot(self.run_dir, self.nimg // every * every, self.preset, self.ema.state_dict(), compute)

    def compute_so_far(self) -> dict:
        """The run's compute at this step, as its log records and its snapshots keep it."""
        return {"kimg": self.nimg / 1000, "train_tflop": training_tflop(self.preset, self.nimg),
                "thread_seconds": round(self.spent_thread_seconds(), 1)}

    def spent_thread_seconds(self) -> float:
        """The run's one-thread seconds so far: those of earlier processes (resumed) plus this one's wall
        seconds times its threads (`compute.threads_in_use`)."""
        if self.started is None:
            return self.thread_seconds
        return self.thread_seconds + (time.time() - self.started) * threads_in_use(self.world)

    def _log(self, window, log, bar, start, start_nimg) -> None:
        mean = {r: float(np.mean([w[r].item() for w in window])) for r in window[0]}
        mean = self._mean_over_ranks(mean)
        if log is None:
            return
        elapsed = time.time() - start
        compute = self.compute_so_far()
        record = {"step": self.step, "kimg": compute["kimg"], "seconds": round(elapsed, 1),
                  "images_per_s": round((self.nimg - start_nimg) / max(elapsed, 1e-9), 2),
                  "train_tflop": compute["train_tflop"], "thread_seconds": compute["thread_seconds"],
                  "dataset": self.ds.name,
                  "loss": sum(mean.values()), **{f"loss_{r}": v for r, v in mean.items()}}
        if self.preset.consistency is not None:
            record["consistency_stage"] = self.preset.consistency.schedule_stage(self.nimg)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if self.tensorboard is not None:
            for key in ("loss", "images_per_s", *(f"loss_{r}" for r in mean)):
                self.tensorboard.add_scalar(f"train/{key}", record[key], self.nimg)
        bar.set_postfix(loss=f"{record['loss']:.1f}")


def write_consistency_plans(run_dir: Path, preset: Preset) -> None:
    """A consistency-tuning run's plans.json: one and two steps per stage (`lowdiff sample --plan two-step`)."""
    plans = ModelPlans({})
    for name, (plan, description) in named_plans(preset.stages, preset.consistency.boundaries).items():
        plans.add(NamedPlan(name, plan, description))
    plans.write(run_dir)


def _tensorboard_writer(run_dir: Path):
    """A TensorBoard writer in run_dir/tensorboard when the tensorboard package is installed."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(run_dir / "tensorboard"))


def discard_run(run_dir: Path) -> None:
    """What --restart removes: the run's states, log, TensorBoard events, snapshots, model and its plans."""
    import shutil
    for name in (storage.STATE_DIR, "tensorboard", SNAPSHOT_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in (storage.MODEL_FILE, storage.CONFIG_FILE, LOG_FILE, storage.RUN_CONFIG_FILE, PLANS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def train(preset: Preset, dataset: ImageDataset, run_dir: str | Path, device: str = "cpu",
          duration_kimg: float | None = None, progress: bool = True) -> Path:
    """Train (or resume) a run in `run_dir`; returns the run (= model) directory."""
    return run_training(preset, dataset, run_dir, device, duration_kimg, progress).run_dir


def run_training(preset: Preset, dataset: ImageDataset, run_dir: str | Path, device: str = "cpu",
                 duration_kimg: float | None = None, progress: bool = True, restart: bool = False,
                 init_from: Baseline | None = None, snapshot_kimg: float | None = None) -> "Trainer":
    """Train (or resume) a run and return the trainer (`run_dir`, `stopped_by`). Under torchrun the
    process group is left afterwards, once all ranks arrive (at once after an error)."""
    try:
        trainer = Trainer(preset, dataset, run_dir, device, restart=restart, init_from=init_from,
                          snapshot_kimg=snapshot_kimg)
        trainer.run(duration_kimg, progress)
    except BaseException:
        close_distributed(barrier=False)
        raise
    close_distributed()
    return trainer


def open_training_data(preset: Preset, data: str | None):
    """The dataset a preset trains on: `data` or the preset's default, opened for the network's side
    (Fashion-MNIST is zero-padded to it, `open_dataset`); latent presets need a latent directory (`lowdiff dataset encode`)."""
    from ..data import is_latent_dir, open_dataset
    data = data or preset.data
    if not data and preset.latent is None:
        raise ConfigError(f"preset {preset.name} has no default dataset: pass --data")
    if preset.latent is not None and not (data and is_latent_dir(data)):
        raise ConfigError(f"preset {preset.name} trains on VAE latents: encode the images first with `lowdiff "
                          f"dataset encode {data or 'IMAGES'} --vae VAE --out LATENTS` (e.g. --vae bundled:fashion-vae) "
                          "and pass --data LATENTS")
    return open_dataset(data, side=preset.network.img_resolution)
