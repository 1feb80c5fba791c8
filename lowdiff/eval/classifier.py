"""Offline image classifiers, the feature spaces for FID / IS where Inception weights can't be had.

`ImageClassifier` is a small VGG-style CNN for uint8 32x32 images, in one of two layouts (`ARCHS`):
`fashion-cnn-v1` (about 140k parameters, grayscale, for Fashion-MNIST zero-padded from 28x28, the layout of
`open_dataset('fashion-mnist', pad_to=32)`) and `cifar-cnn-v1` (one more level, RGB, for CIFAR-10). Its
penultimate activations (global average pool after ReLU) are the FID features and its logits feed the
Inception Score.

`train_classifier` trains one deterministically on CPU (seeded init, shuffling, augmentation and dropout;
deterministic algorithms) and writes `classifier.safetensors` + `classifier.json` (architecture, test accuracy,
...). Scores are only comparable between runs that use the same classifier file. The package bundles the ones
behind the FIDs in docs/results.md: `bundled:fashion-classifier` (5 epochs, seed 0, one thread) and
`bundled:cifar-classifier`; `default_classifier_dir(channels)` picks one for 1- or 3-channel images, a
classifier the user trained into the cache (or $LOWDIFF_CLASSIFIER) taking precedence.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .. import bundled
from ..errors import CheckpointError
from ..files import atomic_write, read_json, write_json

CACHE = Path("~/.cache/lowdiff").expanduser()
DEFAULT_CLASSIFIER_DIR = Path(os.environ.get("LOWDIFF_CLASSIFIER", CACHE / "fashion-classifier")).expanduser()
BUNDLED_CLASSIFIER_DIR = bundled.ASSETS / "fashion-classifier"
WEIGHTS_FILE, CONFIG_FILE = "classifier.safetensors", "classifier.json"
_HINT = "train one with `lowdiff eval train-classifier`"

# The layouts: a width multiplier per 3x3 conv (+ BatchNorm + ReLU), "M" a 2x2 max-pool; then global average
# pooling, dropout and a linear layer. The default input channels (1 gray, 3 RGB) and the bundled classifier of each.
ARCHS: dict[str, tuple] = {
    "fashion-cnn-v1": (1, 1, "M", 2, 2, "M", 4),
    "cifar-cnn-v1": (1, "M", 2, 2, "M", 4, 4, "M", 8),
}
ARCH_FOR_CHANNELS = {1: "fashion-cnn-v1", 3: "cifar-cnn-v1"}
BUNDLED_FOR_CHANNELS = {1: "fashion-classifier", 3: "cifar-classifier"}


class ClassifierError(CheckpointError):
    """A classifier directory that is missing, incomplete or corrupt."""


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImageClassifier(nn.Module):
    """The layout of `ARCHS[name]` at `width` channels -> GAP -> features -> dropout -> fc.

    fashion-cnn-v1: conv(1->w) conv(w->w) pool | conv(w->2w) conv(2w->2w) pool | conv(2w->4w) GAP (4w features).
    cifar-cnn-v1:   conv(3->w) pool | conv(w->2w) conv(2w->2w) pool | conv(2w->4w) conv(4w->4w) pool | conv(4w->8w)
                    GAP (8w features).
    Inputs are uint8 images (N, C, 32, 32) in [0, 255] (any dtype holding that range is accepted), scaled to [-1, 1]
    inside; a grayscale classifier converts 3-channel images to luma (ITU-R 601), an RGB one repeats a gray channel.
    """

    def __init__(self, width: int = 32, num_classes: int = 10, resolution: int = 32, dropout: float = 0.2,
                 name: str = "fashion-cnn-v1", in_channels: int | None = None):
        super().__init__()
        if name not in ARCHS:
            raise ValueError(f"unknown classifier architecture {name!r} (this version reads {', '.join(ARCHS)})")
        if in_channels is None:
            in_channels = {arch: c for c, arch in ARCH_FOR_CHANNELS.items()}[name]
        if in_channels not in (1, 3):
            raise ValueError(f"a classifier takes 1 or 3 input channels, got {in_channels}")
        self.name, self.in_channels = name, in_channels
        self.width, self.num_classes, self.resolution, self.dropout_p = width, num_classes, resolution, dropout
        layers, channels = [], in_channels
        for item in ARCHS[name]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(_conv(channels, item * width))
                channels = item * width
        self.feature_dim = channels
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def arch(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "num_classes": self.num_classes,
                "resolution": self.resolution, "dropout": self.dropout_p, "in_channels": self.in_channels}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] (N, C, H, W) -> float32 [-1, 1] (N, in_channels, H, W) on the model's device."""
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"the classifier needs images (N, 1, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"the classifier was trained on {self.resolution}x{self.resolution} images, got "
                             f"{images.shape[-1]}x{images.shape[-2]} (pad 28x28 Fashion-MNIST to 32, "
                             f"e.g. open_dataset(..., pad_to=32))")
        x = images.to(self.fc.weight.device, torch.float32) / 127.5 - 1
        if x.shape[1] == 3 and self.in_channels == 1:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x

    def features_and_logits(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (N, feature_dim) float32, logits (N, num_classes))."""
        features = self.body(self.preprocess(images_uint8))
        return features, self.fc(self.dropout(features))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images_uint8)[1]


def _build(arch: dict[str, Any]) -> ImageClassifier:
    return ImageClassifier(width=int(arch["width"]), num_classes=int(arch["num_classes"]),
                           resolution=int(arch["resolution"]), dropout=float(arch["dropout"]), name=arch.get("name"),
                           in_channels=int(arch.get("in_channels", 1)))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- training

@contextlib.contextmanager
def _deterministic(seed: int):
    """Seeded global RNG and deterministic algorithms, both restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _augment(images: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flip and random translation by up to `shift` px (zero padding), per image, uint8 in/out."""
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=gen) < 0.5
    images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    padded = F.pad(images, (shift, shift, shift, shift))
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]          # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]          # (N, 1, 1, W)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(images.shape[1]).view(1, -1, 1, 1), rows, cols]


def _lr_lambda(total: int, warmup: float = 0.05):
    warm = max(1, int(total * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f


@torch.no_grad()
def evaluate_accuracy(model: ImageClassifier, images: np.ndarray | torch.Tensor, labels, batch: int = 1000) -> float:
    """Top-1 accuracy of `model` (switched to eval mode) on uint8 images."""
    model.eval()
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    correct = 0
    for start in range(0, len(images), batch):
        pred = model(images[start:start + batch]).argmax(1).cpu()
        correct += int((pred == labels[start:start + batch]).sum())
    return correct / max(1, len(images))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 256, limit: int = 4096) -> None:
    """Replace BatchNorm running statistics by exact averages over (up to `limit`) un-augmented training images.

    The exponential running averages lag behind the weights (badly so in short runs); exact statistics of the final
    weights make eval-mode features match what the network was trained on.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                     # cumulative average over the batches below
    model.train()
    images = images[:limit]
    for start in range(0, len(images), batch):
        if len(images) - start >= 2:
            model(images[start:start + batch])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def train_classifier(out_dir: str | Path, *, epochs: int = 5, batch: int = 128, lr: float = 2e-3, seed: int = 0,
                     train=None, test=None, width: int = 32, arch: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Train an ImageClassifier on CPU, deterministically; write classifier.{safetensors,json} to `out_dir`.

    `train` / `test` are ImageDatasets (uint8 (N, C, 32, 32) images with labels, C = 1 or 3); by default the
    Fashion-MNIST train and test splits, zero-padded to 32x32. `arch` is a name in ARCHS (default: the one for
    the data's channel count). Returns the metadata written to classifier.json.
    """
    from ..data import open_dataset
    if epochs < 1 or batch < 2:
        raise ValueError(f"train_classifier needs epochs >= 1 and batch >= 2, got epochs={epochs}, batch={batch}")
    train = open_dataset("fashion-mnist", split="train", pad_to=32) if train is None else train
    test = open_dataset("fashion-mnist:test", pad_to=32) if test is None else test
    channels = train.images.shape[1]
    for name, ds in (("train", train), ("test", test)):
        if ds.labels is None:
            raise ValueError(f"train_classifier: the {name} dataset {ds.name} has no labels")
        if ds.images.shape[1:] != (channels, 32, 32) or channels not in ARCH_FOR_CHANNELS:
            raise ValueError(f"train_classifier: the {name} dataset {ds.name} has images of shape "
                             f"{ds.images.shape[1:]}; need (1, 32, 32) or (3, 32, 32), the same for train and test "
                             "(use pad_to=32 for Fashion-MNIST)")
    arch = arch or ARCH_FOR_CHANNELS[channels]
    num_classes = len(train.class_names) if train.class_names else int(max(train.labels.max(), test.labels.max())) + 1
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    steps_per_epoch = len(images) // batch + (len(images) % batch >= 2)   # a last batch of 1 is dropped (BatchNorm)
    total = epochs * steps_per_epoch
    start_time = time.perf_counter()
    with _deterministic(seed):
        model = ImageClassifier(width=width, num_classes=num_classes, name=arch, in_channels=channels)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total))
        bar = tqdm(total=total, disable=not progress, desc="classifier", unit="step")
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(images), generator=gen)
            for i in range(steps_per_epoch):
                idx = order[i * batch:(i + 1) * batch]
                x = _augment(images[idx], gen)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        bar.close()
        recalibrate_batchnorm(model, images[torch.randperm(len(images), generator=gen)[:4096]])
        accuracy = evaluate_accuracy(model, test.images, test.labels)
    train_seconds = time.perf_counter() - start_time
    meta = {"arch": model.arch(), "test_accuracy": accuracy, "epochs": epochs, "seed": seed,
            "feature_dim": model.feature_dim, "train_seconds": round(train_seconds, 2), "batch": batch, "lr": lr,
            "num_parameters": num_parameters(model), "train_data": train.name, "train_size": len(train),
            "test_data": test.name, "test_size": len(test), "class_names": train.class_names,
            "torch_version": torch.__version__}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"format": "pt", "arch": arch}))
    write_json(out / CONFIG_FILE, meta)
    return meta


# ---------------------------------------------------------------------------------------------------- loading

def default_classifier_dir(channels: int = 1) -> Path:
    """$LOWDIFF_CLASSIFIER if set; else one trained into ~/.cache/lowdiff/{fashion,cifar}-classifier; else the
    bundled one, for grayscale (1) or RGB (3) images."""
    if os.environ.get("LOWDIFF_CLASSIFIER"):
        return Path(os.environ["LOWDIFF_CLASSIFIER"]).expanduser()
    name = BUNDLED_FOR_CHANNELS.get(channels, BUNDLED_FOR_CHANNELS[1])
    cache = DEFAULT_CLASSIFIER_DIR if channels == 1 else CACHE / name
    return cache if (cache / WEIGHTS_FILE).is_file() else bundled.ASSETS / name


def load_classifier(directory: str | Path | None = None, channels: int = 1) -> ImageClassifier:
    """The trained classifier in `directory` (default: `default_classifier_dir(channels)`), in eval mode, on CPU."""
    d = bundled.resolve(directory or default_classifier_dir(channels)).expanduser()
    weights, config = d / WEIGHTS_FILE, d / CONFIG_FILE
    missing = [p.name for p in (weights, config) if not p.is_file()]
    if missing:
        where = "does not exist" if not d.is_dir() else f"has no {' or '.join(missing)}"
        raise ClassifierError(f"no trained classifier at {d} ({where}): {_HINT} "
                              f"(or set LOWDIFF_CLASSIFIER to the directory of one)")
    try:
        meta = read_json(config)
        model = _build(meta["arch"])
    except (KeyError, TypeError, ValueError) as e:
        raise ClassifierError(f"{config} is corrupt or from an incompatible version ({e}); {_HINT}") from e
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ClassifierError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {e}; "
                              f"{_HINT}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ClassifierError(f"{weights} does not match the architecture in {config.name} ({e}); {_HINT}") from e
    model.test_accuracy = meta.get("test_accuracy")
    return model.eval()
