"""FID and Inception Score from features, in float64.

FID (Heusel et al. 2017) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the
matrix square root is computed from the symmetric form tr((S1^(1/2) S2 S1^(1/2))^(1/2)) with
`eigh` (tiny negative eigenvalues from rounding are clipped), which is stable where scipy's
sqrtm can return NaN or complex values, and about 5x faster.
IS (Salimans et al. 2016) = exp(E_x KL(p(y|x) || p(y))), mean and std over 10 splits.
Reference statistics are .npz files with `mu` and `sigma`, the layout of EDM's fid.py.
"""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import MetricError
from ..files import atomic_write


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
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) (Heusel et al. 2017). Both sides
    are checked first (`check_statistics`); a result that rounding makes slightly negative is 0,
    a clearly negative or non-finite one is an error, never a figure."""
    mu1, s1 = check_statistics(mu1, sigma1, "the first statistics")
    mu2, s2 = check_statistics(mu2, sigma2, "the second statistics")
    if mu1.shape != mu2.shape:
        raise MetricError(f"statistics of {mu1.shape[0]} and {mu2.shape[0]} features cannot be compared")
    root1 = _sqrt_psd(s1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    fid = float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    scale = np.trace(s1) + np.trace(s2) + 1e-12
    if not math.isfinite(fid) or fid < -1e-6 * scale:
        raise MetricError(f"the FID came out as {fid:g}: the statistics are inconsistent")
    return max(fid, 0.0)


def check_statistics(mu, sigma, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as float64 when they are a mean vector and a covariance matrix: finite, of matching
    sizes, symmetric and positive semi-definite up to rounding; else a MetricError naming `where`."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricError(f"{where}: mu has shape {mu.shape} and sigma {sigma.shape}; need (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricError(f"{where}: mu or sigma holds NaN or inf values")
    scale = np.abs(sigma).max() + 1e-30
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise MetricError(f"{where}: sigma is not symmetric, so not a covariance matrix")
    if np.linalg.eigvalsh((sigma + sigma.T) / 2).min() < -1e-6 * scale:
        raise MetricError(f"{where}: sigma has negative eigenvalues, so not a covariance matrix")
    return mu, sigma


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """IS from classifier logits (N, classes): mean and std over `splits` equal splits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < 1 or not np.isfinite(logits).all():
        raise MetricError(f"the Inception Score needs finite logits (N, classes), got shape {logits.shape}")
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(logp, min(splits, len(logp))):          # no empty split (its mean is NaN)
        p = np.exp(part)
        log_marginal = np.log(p.mean(0) + 1e-30)
        scores.append(np.exp((p * (part - log_marginal)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
    """Write `mu`, `sigma` (and `extra` arrays) to an .npz atomically, creating missing parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:                     # a file object: np.savez adds no suffix to it
            np.savez(f, mu=mu, sigma=sigma, **extra)
    atomic_write(path, write)


READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)   # numpy's on a torn or foreign file


def open_npz(path: str | Path):
    """The open NpzFile of a statistics file; one-line errors for files that are missing, truncated, or not .npz."""
    path = Path(path)
    if not path.is_file():
        raise MetricError(f"statistics {path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except READ_ERRORS:
        raise MetricError(f"{path}: not a readable .npz statistics file (truncated, or another format); make "
                          "it again with `lowdiff eval ref`") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise MetricError(f"{path}: a single array (.npy), not .npz statistics (`lowdiff eval ref` writes those)")
    return loaded


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a statistics .npz, checked (`check_statistics`); one-line errors for files
    that are missing, truncated, not .npz or not statistics."""
    with open_npz(path) as f:
        if "mu" not in f or "sigma" not in f:
            raise MetricError(f"{path}: not FID statistics (needs arrays 'mu' and 'sigma')")
        try:
            mu, sigma = f["mu"], f["sigma"]
        except READ_ERRORS:
            raise MetricError(f"{path}: not a readable .npz statistics file (truncated, or another format); make "
                              "it again with `lowdiff eval ref`") from None
    for name, array in (("mu", mu), ("sigma", sigma)):
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise MetricError(f"{path}: array '{name}' holds {array.dtype} values, not real numbers; make it again "
                              "with `lowdiff eval ref`")
    return check_statistics(mu, sigma, str(path))
