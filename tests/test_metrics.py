"""FID / IS numerics: eigen-based FID against scipy's sqrtm, self-distance, IS bounds."""
import numpy as np
import pytest
import scipy.linalg

from lowdiff.eval.metrics import (FeatureStats, frechet_distance, inception_score, load_stats, save_stats,
                                  statistics)


def scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def features(seed, n=2000, d=64):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.maximum(rng.normal(size=(n, d)) @ mix + 0.3 * seed, 0)


def test_fid_matches_scipy_sqrtm_within_1e_6_relative():
    a, b = statistics(features(1)), statistics(features(2))
    ours, ref = frechet_distance(*a, *b), scipy_fid(*a, *b)
    assert abs(ours - ref) / ref < 1e-6


def test_fid_of_a_set_with_itself_is_zero():
    s = statistics(features(3))
    assert abs(frechet_distance(*s, *s)) < 1e-8


def test_running_stats_equal_batch_stats():
    f = features(4, n=500)
    run = FeatureStats(f.shape[1])
    for chunk in np.array_split(f, 7):
        run.update(chunk)
    mu, sigma = statistics(f)
    assert np.allclose(run.mu, mu) and np.allclose(run.sigma, sigma)
    assert np.allclose(sigma, np.cov(f, rowvar=False))


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(1000) % 10] * 50
    assert inception_score(confident)[0] == pytest.approx(10, rel=1e-3)
    assert inception_score(np.zeros((1000, 10)))[0] == pytest.approx(1.0)


def test_stats_npz_round_trip(tmp_path):
    mu, sigma = statistics(features(5, n=100, d=8))
    save_stats(tmp_path / "ref.npz", mu, sigma)
    mu2, sigma2 = load_stats(tmp_path / "ref.npz")
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    np.savez(tmp_path / "bad.npz", x=mu)
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")
