"""The evaluation protocol: reference statistics of a dataset, and FID / IS of a model's
samples generated for a fixed, printed seed range.

Feature spaces: 'inception' (the standard FID Inception-v3; its weight file must be on disk,
see `lowdiff.eval.inception`) or 'classifier' (our Fashion-MNIST classifier, bundled or
trained by `lowdiff eval train-classifier`, for offline checks). Statistics are float64 and saved as
.npz with `mu` and `sigma` (plus the feature space's name, so mismatches are caught).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import open_dataset
from .metrics import FeatureStats, frechet_distance, inception_score, load_stats, save_stats


def get_extractor(kind: str, path: str | None = None, device: str = "cpu"):
    """A feature extractor: (uint8 images) -> (features, logits)."""
    from . import features
    if kind == "classifier":
        from .classifier import load_classifier
        return features.ClassifierFeatures(load_classifier(path).to(device))
    if kind == "inception":
        from .inception import find_inception_weights, load_inception
        weights = find_inception_weights(path)
        if weights is None:
            raise FileNotFoundError("Inception weights not found: pass --inception PATH or set LOWDIFF_INCEPTION "
                                    "(see `lowdiff eval --help` for the file names)")
        return features.InceptionFeatures(load_inception(weights).to(device))
    raise ValueError(f"unknown feature space {kind!r}: choose classifier or inception")


def reference_stats(data: str, out: str | Path, extractor, feature_space: str, split: str = "test",
                    batch: int = 256, progress: bool = True) -> dict:
    from .features import extract
    ds = open_dataset(data, split=split)
    feats, logits = extract(extractor, ds.images, batch=batch, progress=progress)
    stats = FeatureStats(feats.shape[1])
    stats.update(feats)
    save_stats(out, stats.mu, stats.sigma, feature_space=np.array(feature_space), num=np.array(stats.n))
    result = {"data": ds.name, "num": stats.n, "out": str(out), "feature_space": feature_space}
    if logits is not None:
        result["inception_score"] = inception_score(logits)
    return result


@dataclass
class Evaluation:
    fid: float
    inception_score: tuple[float, float] | None
    num: int
    seeds: tuple[int, int]
    feature_space: str
    generation_s: float = 0.0            # time spent generating the samples (not extracting features)


def evaluate_pipeline(pipe, ref: str | Path, extractor, feature_space: str, num: int = 10_000, seed: int = 0,
                      stages=None, batch: int = 256, progress: bool = True) -> Evaluation:
    """Generate seeds [seed, seed + num) and compare their features with `ref`."""
    with np.load(ref, allow_pickle=False) as f:
        ref_space = str(f["feature_space"]) if "feature_space" in f else None
    if ref_space and ref_space != feature_space:
        raise ValueError(f"{ref} holds {ref_space} statistics but features are {feature_space}")
    mu_ref, sigma_ref = load_stats(ref)
    stats, logits, generation_s = None, [], 0.0
    for start in tqdm(range(seed, seed + num, batch), disable=not progress, desc="fid", unit="batch"):
        seeds = list(range(start, min(start + batch, seed + num)))
        start_time = time.perf_counter()
        images = pipe(seeds=seeds, stages=stages, batch=batch).images
        generation_s += time.perf_counter() - start_time
        with torch.inference_mode():
            f, lg = extractor(images)
        stats = stats or FeatureStats(f.shape[1])
        stats.update(f.double().cpu().numpy())
        if lg is not None:
            logits.append(lg.double().cpu().numpy())
    fid = frechet_distance(stats.mu, stats.sigma, mu_ref, sigma_ref)
    score = inception_score(np.concatenate(logits)) if logits else None
    return Evaluation(fid, score, num, (seed, seed + num - 1), feature_space, generation_s)


def evaluate_autoencoder(vae_spec: str | Path, data: str, extractor, feature_space: str, num: int | None = None,
                         batch: int = 256, device: str = "cpu", progress: bool = True) -> dict:
    """Reconstruction quality of a VAE on a dataset (e.g. fashion-mnist:test): each image is
    encoded to its posterior mean and decoded; PSNR (dB, uint8 images, mean over images and
    of the pooled MSE) and the FID of the reconstructions against the originals, both sets'
    statistics taken in the same pass."""
    from ..data.latents import _to_vae_input
    from ..data.vae import load_vae
    from ..images import to_uint8
    ds = open_dataset(data)
    images = ds.images[:num] if num else ds.images
    vae = load_vae(vae_spec, device)
    real = fake = None
    psnrs, sq_err = [], 0.0
    for start in tqdm(range(0, len(images), batch), disable=not progress, desc="vae eval", unit="batch"):
        x = images[start:start + batch]
        with torch.inference_mode():
            z = vae.encode(_to_vae_input(x, vae.config.in_channels, device)).latent_dist.mode()
            rec = to_uint8(vae.decode(z).sample).cpu()
        if rec.shape[1] != x.shape[1]:
            rec = rec[:, :x.shape[1]]
        err = (rec.double() - torch.from_numpy(x).double()).pow(2).flatten(1).mean(1)
        psnrs += (10 * torch.log10(255 ** 2 / err.clamp_min(1e-10))).tolist()
        sq_err += float(err.sum())
        f_real, _ = extractor(torch.from_numpy(x))
        f_fake, _ = extractor(rec)
        real = real or FeatureStats(f_real.shape[1])
        fake = fake or FeatureStats(f_fake.shape[1])
        real.update(f_real.double().cpu().numpy())
        fake.update(f_fake.double().cpu().numpy())
    return {"data": ds.name, "num": len(images), "vae": str(vae_spec), "latent_shape": list(z.shape[1:]),
            "psnr_mean_db": float(np.mean(psnrs)), "psnr_pooled_db": float(10 * np.log10(255 ** 2 * len(images) /
                                                                                        sq_err)),
            "fid_reconstructions": frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma),
            "feature_space": feature_space}
