"""The evaluation protocol: reference statistics of a dataset, and FID / IS of a model's
samples generated for a fixed, printed seed range.

Feature spaces: 'inception' (the standard FID Inception-v3; its weight file must be on disk,
see `lowdiff.eval.inception`) or 'classifier' (our Fashion-MNIST or CIFAR-10 classifier,
bundled or trained by `lowdiff eval train-classifier`, for offline checks). Statistics are float64 and saved as
.npz with `mu` and `sigma`, plus the identity of the extractor that made them (feature space,
dimension, SHA-256 of its weights) and the shape of the images measured: an FID between
statistics of different extractors, or of images of another shape (channels, size), is
refused before any sample is made (`check_reference`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import open_dataset
from ..distributed import SINGLE, World
from ..errors import ConfigError, MetricError
from ..progress import image_bar
from ..seeds import Seeds
from .metrics import READ_ERRORS, FeatureStats, frechet_distance, inception_score, load_stats, open_npz, save_stats, \
    statistics

IDENTITY_KEYS = ("feature_space", "feature_dim", "extractor_sha256")
IMAGE_SHAPE = "image_shape"            # (C, H, W) of the images a statistics file measured


def read_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, the extractor identity and image shape recorded with them; keys missing in old
    files absent), after `load_stats` has checked that the file holds usable statistics."""
    mu, sigma = load_stats(path)
    with open_npz(path) as f:
        try:
            identity = {k: f[k].item() for k in IDENTITY_KEYS if k in f and f[k].ndim == 0}
            shape = f[IMAGE_SHAPE] if IMAGE_SHAPE in f else None
        except READ_ERRORS:
            raise MetricError(f"{path}: its record of the feature extractor is unreadable; make it again with "
                              "`lowdiff eval ref`") from None
    if shape is not None:
        if shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer):
            raise MetricError(f"{path}: '{IMAGE_SHAPE}' must be three integers (C, H, W), got {shape!r}")
        identity[IMAGE_SHAPE] = tuple(int(v) for v in shape)
    identity.setdefault("feature_dim", int(mu.shape[0]))
    if identity["feature_dim"] != mu.shape[0]:
        raise MetricError(f"{path}: records {identity['feature_dim']} features but its mean has {mu.shape[0]}")
    return mu, sigma, identity


def reference_for(ref: str | Path, extractor, feature_space: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the reference statistics `ref` for images of `shape` (C, H, W) measured by
    `extractor` (`check_reference`)."""
    return check_reference(ref, {**extractor.identity, "feature_space": feature_space}, tuple(shape),
                           getattr(extractor, "input_channels", None))


def checked_reference(ref, extractor, feature_space: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma): `ref` as it is when already checked (a tuple, e.g. from `reference_for`), else a statistics
    file read and checked by `reference_for`."""
    return ref if isinstance(ref, tuple) else reference_for(ref, extractor, feature_space, shape)


def _check_shape(ref, recorded, shape, input_channels) -> None:
    if shape is None:
        return
    if recorded is not None and tuple(recorded) != tuple(shape):
        raise ConfigError(f"{ref} measured {describe_images(recorded)}, these are {describe_images(shape)}: an FID "
                          "between them is meaningless; make a reference of matching images (`lowdiff eval ref`)")
    if recorded is None and input_channels is not None and input_channels != shape[0]:
        raise ConfigError(f"{ref} was made by a classifier of {input_channels}-channel images, these are "
                          f"{describe_images(shape)}: an FID between them is meaningless; make a reference of "
                          "matching images (`lowdiff eval ref`)")


def describe_images(shape) -> str:
    """'32x32 RGB images' for (3, 32, 32)."""
    c, h, w = shape
    kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c}-channel")
    return f"{h}x{w} {kind} images"


def stats_identity(path: str | Path) -> dict:
    """The extractor identity recorded in a statistics file (`read_stats`)."""
    return read_stats(path)[2]


def check_reference(ref: str | Path, identity: dict, shape: tuple[int, ...] | None = None,
                    input_channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of reference statistics, refused when made by another feature extractor
    than `identity`'s, or of images of another `shape` (C, H, W) than the ones measured. A
    reference of an older lowdiff records no shape: then an extractor made for `input_channels`
    channels refuses images of another channel count."""
    mu, sigma, found = read_stats(ref)
    _check_shape(ref, found.get(IMAGE_SHAPE), shape, input_channels)
    for key in IDENTITY_KEYS:
        if key in found and identity.get(key) and found[key] != identity[key]:
            raise ConfigError(f"{ref} was made with another feature extractor ({key} {str(found[key])[:16]}, this "
                              f"one {str(identity[key])[:16]}): an FID between them is meaningless; make the reference "
                              "with the same --features / --classifier / --inception (`lowdiff eval ref`)")
    for path, known in ((ref, found), (identity.get("path"), identity)):
        if path is not None and not known.get("extractor_sha256"):
            warnings.warn(f"{path} does not record its feature extractor's weights (made by an older lowdiff); "
                          "make it again with `lowdiff eval ref` so that a mismatch can be caught")
    return mu, sigma


def get_extractor(kind: str, path: str | None = None, device: str = "cpu", channels: int = 1,
                  ref: str | Path | None = None):
    """A feature extractor: (uint8 images) -> (features, logits). Without `path`, the classifier
    is the default one for `channels`-channel images, or the default classifier of the other
    channel count when it is the one that made the statistics `ref`."""
    from . import features
    if kind == "classifier":
        from .classifier import load_classifier
        if path is None:
            path = _default_classifier_for(channels, ref)
        return features.ClassifierFeatures(load_classifier(path, channels).to(device))
    if kind == "inception":
        from .inception import find_inception_weights, load_inception
        weights = find_inception_weights(path)
        if weights is None:
            raise FileNotFoundError("Inception weights not found: pass --inception PATH or set LOWDIFF_INCEPTION "
                                    "(see `lowdiff eval --help` for the file names)")
        return features.InceptionFeatures(load_inception(weights).to(device))
    raise ValueError(f"unknown feature space {kind!r}: choose classifier or inception")


def _default_classifier_for(channels: int, ref: str | Path | None) -> Path:
    """The default classifier directory for the images, unless `ref` names another default by its weights."""
    from .classifier import WEIGHTS_FILE, default_classifier_dir, load_classifier
    from .features import weights_sha256
    first = default_classifier_dir(channels)
    wanted = stats_identity(ref).get("extractor_sha256") if ref is not None and Path(ref).is_file() else None
    if wanted:
        for d in dict.fromkeys([first, default_classifier_dir(1), default_classifier_dir(3)]):
            if (d / WEIGHTS_FILE).is_file() and weights_sha256(load_classifier(d)) == wanted:
                return d
    return first


def reference_stats(data, out: str | Path, extractor, feature_space: str, split: str = "test",
                    batch: int = 256, progress: bool = True, world: World = SINGLE) -> dict | None:
    """Write the feature statistics of a dataset (a spec for `open_dataset`, or an ImageDataset) to
    `out`, batch by batch (float64 running sums); under torchrun the ranks share the batches and
    rank 0 writes (the other ranks return None)."""
    ds = open_dataset(data, split=split) if isinstance(data, str) else data

    def features_of(i: int):
        with torch.inference_mode():
            f, lg = extractor(ds.images[i * batch:(i + 1) * batch])
        return f.double().cpu().numpy(), None if lg is None else lg.double().cpu().numpy()

    with image_bar(len(ds), "features", disable=not progress or not world.is_main) as bar:
        stats = accumulate(world, (len(ds) + batch - 1) // batch, features_of, bar)
    if not world.is_main:
        return None
    write_stats(out, stats, extractor, data=ds.name, **{IMAGE_SHAPE: list(ds.images.shape[1:])})
    result = {"data": ds.name, "num": stats.n, "out": str(out), "feature_space": feature_space}
    if stats.logits:
        # IS averages over splits that should each look like the whole set; datasets are often stored
        # sorted by class (the CIFAR-10 JPEG zip is), which would make every split one class.
        logits = np.concatenate(stats.logits)
        result["inception_score"] = inception_score(logits[np.random.default_rng(0).permutation(len(logits))])
    return result


@dataclass
class Evaluation:
    fid: float
    inception_score: tuple[float, float] | None
    num: int
    seeds: tuple[int, int]
    feature_space: str
    generation_s: float = 0.0            # rank 0's time generating its samples (not extracting features)
    generated: int = 0                   # the samples rank 0 generated (all of them in one process)

    @property
    def images_per_s(self) -> float:
        """Generation throughput of one process."""
        return self.generated / max(self.generation_s, 1e-9)


def evaluate_pipeline(pipe, ref: str | Path | tuple, extractor, feature_space: str, num: int = 10_000, seed: int = 0,
                      stages=None, batch: int = 256, progress: bool = True, world: World = SINGLE,
                      bar=None) -> Evaluation:
    """Generate seeds [seed, seed + num) and compare their features with `ref`: a statistics
    file (checked against the extractor first) or (mu, sigma) already checked. Under torchrun
    (`world`) each rank makes and extracts every N-th batch and rank 0 accumulates the float64
    statistics in batch order, so the FID equals one process's to the last digit; every rank
    returns it. `bar`: an image progress bar to advance (e.g. a tune's), else one of its own."""
    if num < 2:
        raise ConfigError(f"an FID needs at least 2 samples, got num={num}")
    mu_ref, sigma_ref = checked_reference(ref, extractor, feature_space, pipe.image_shape)
    seeds = Seeds.count(seed, num)
    plan = pipe.plan(stages)
    generation_s, generated = [0.0], [0]
    own_bar = bar is None
    bar = image_bar(num, "fid", disable=not progress or not world.is_main) if own_bar else bar

    def features_of(i: int):
        start_time = time.perf_counter()
        images, _, _ = pipe.sample_batch(seeds.batch(i, batch), None, plan, bar if world.size == 1 else None)
        generation_s[0] += time.perf_counter() - start_time
        generated[0] += len(images)
        with torch.inference_mode():
            f, lg = extractor(images)
        return f.double().cpu().numpy(), None if lg is None else lg.double().cpu().numpy()

    result = None
    stats = accumulate(world, seeds.num_batches(batch), features_of, bar, counted=world.size == 1)
    if own_bar:
        bar.close()
    if world.is_main:
        fid = frechet_distance(stats.mu, stats.sigma, mu_ref, sigma_ref)
        score = inception_score(np.concatenate(stats.logits)) if stats.logits else None
        result = Evaluation(fid, score, num, (seed, seed + num - 1), feature_space, generation_s[0], generated[0])
    return world.broadcast(result)


class _Stats(FeatureStats):
    """Feature statistics and the logits seen, for the Inception Score."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.logits: list[np.ndarray] = []


def accumulate(world: World, num_batches: int, features_of, bar, counted: bool = False) -> _Stats | None:
    """Feature statistics over batches 0 .. num_batches - 1, `features_of(i)` -> (features,
    logits or None) float64: made by the ranks in turn, summed by rank 0 in batch order (None
    on the other ranks). `bar` (an image bar) advances by each batch's images unless
    `features_of` already `counted` them."""
    stats = None
    for i in world.rounds(num_batches):
        for item in world.gather(features_of(i) if i is not None else None) or []:
            if item is None:
                continue
            f, lg = item
            stats = stats or _Stats(f.shape[1])
            stats.update(f)
            if lg is not None:
                stats.logits.append(lg)
            if not counted:
                bar.update(len(f))
    return stats


def write_stats(path: str | Path, stats: FeatureStats, extractor, **info) -> None:
    """Statistics .npz with the extractor's identity and `info` (strings / numbers)."""
    extra = {k: np.array(v) for k, v in {**extractor.identity, **info}.items()}
    save_stats(path, stats.mu, stats.sigma, num=np.array(stats.n), **extra)


def image_folder(folder: str | Path):
    """The images of a folder (e.g. `lowdiff sample --out DIR`) as an ImageDataset; a folder
    whose labels.csv lists other files than its images is refused."""
    from ..data import ImageDataset
    from ..images import check_labels_csv
    if Path(folder).is_dir():
        check_labels_csv(folder)
    ds = open_dataset(str(folder), use_labels=False)
    if not isinstance(ds, ImageDataset):
        raise ConfigError(f"{folder}: holds {type(ds).__name__}, not images")
    return ds


def folder_stats(folder, extractor, num: int | None = None, batch: int = 256, progress: bool = True) -> FeatureStats:
    """Feature statistics of the images of a folder (a path, or its `image_folder`)."""
    from .features import extract
    ds = image_folder(folder) if isinstance(folder, (str, Path)) else folder
    feats, _ = extract(extractor, ds.images[:num] if num else ds.images, batch=batch, progress=progress)
    stats = FeatureStats(feats.shape[1])
    stats.update(feats)
    return stats


def fid_between(stats_path: str | Path, ref: str | Path) -> float:
    """FID between two statistics files, which must come from the same extractor."""
    identity = stats_identity(stats_path)
    return frechet_distance(*load_stats(stats_path), *check_reference(ref, {**identity, "path": stats_path},
                                                                      identity.get(IMAGE_SHAPE)))


def evaluate_autoencoder(vae_spec: str | Path, data: str, extractor, feature_space: str, num: int | None = None,
                         batch: int = 256, device: str = "cpu", progress: bool = True) -> dict:
    """Reconstruction quality of a VAE on a dataset (e.g. fashion-mnist:test): each image is
    encoded to its posterior mean and decoded; PSNR (dB, uint8 images, mean over images and
    of the pooled MSE) and the FID of the reconstructions against the originals."""
    from ..data.vae import downsampling_factor, load_vae, to_vae_input
    from ..images import to_uint8
    from .features import extract
    ds = open_dataset(data)
    images = ds.images[:num] if num else ds.images
    vae = load_vae(vae_spec, device)
    recon = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch), disable=not progress, desc="reconstruct", unit="batch"):
            x = to_vae_input(images[start:start + batch], vae.config.in_channels, device)
            recon.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample).cpu()[:, :images.shape[1]])
    recon = torch.cat(recon)
    err = (recon.double() - torch.from_numpy(images).double()).pow(2).flatten(1).mean(1)
    real, _ = extract(extractor, images, batch=batch, progress=progress)
    fake, _ = extract(extractor, recon, batch=batch, progress=progress)
    return {"data": ds.name, "num": len(images), "vae": str(vae_spec),
            "latent_shape": [vae.config.latent_channels]
            + [images.shape[-1] // downsampling_factor(vae.config.block_out_channels)] * 2,
            "psnr_mean_db": float((10 * torch.log10(255 ** 2 / err.clamp_min(1e-10))).mean()),
            "psnr_pooled_db": float(10 * torch.log10(255 ** 2 / err.mean())),
            "fid_reconstructions": frechet_distance(*statistics(fake), *statistics(real)),
            "feature_space": feature_space}
