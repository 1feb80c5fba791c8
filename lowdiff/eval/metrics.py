"""FID and Inception Score from features, in float64.

FID (Heusel et al. 2017) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the
matrix square root is computed from the symmetric form tr((S1^(1/2) S2 S1^(1/2))^(1/2)) with
`eigh` (tiny negative eigenvalues from rounding are clipped), which is stable where scipy's
sqrtm can return NaN or complex values, and about 5x faster.
IS (Salimans et al. 2016) = exp(E_x KL(p(y|x) || p(y))), mean and std over 10 splits.
Reference statistics are .npz files with `mu` and `sigma`, the layout of EDM's fid.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class FeatureStats:
    """Running float64 sums of features, merged in any order (mean and unbiased covariance)."""

    def __init__(self, dim: int):
        self.n, self.sum, self.outer = 0, np.zeros(dim), np.zeros((dim, dim))

    def update(self, features) -> None:
        f = np.asarray(features, dtype=np.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    @property
    def mu(self) -> np.ndarray:
        return self.sum / self.n

    @property
    def sigma(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("need at least 2 samples for a covariance")
        mu = self.mu
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    s = FeatureStats(np.asarray(features).shape[1])
    s.update(features)
    return s.mu, s.sigma


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrt_psd(s1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """IS from classifier logits (N, classes): mean and std over `splits` equal splits."""
    logits = np.asarray(logits, np.float64)
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(logp, splits):
        p = np.exp(part)
        log_marginal = np.log(p.mean(0) + 1e-30)
        scores.append(np.exp((p * (part - log_marginal)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
    """Write `mu`, `sigma` (and `extra` arrays) to an .npz, creating missing parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, **extra)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path}: reference statistics need arrays 'mu' and 'sigma'")
        return f["mu"], f["sigma"]
