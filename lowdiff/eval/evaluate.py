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
