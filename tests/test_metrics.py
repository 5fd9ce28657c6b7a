"""Frechet distance, FeatureStats, and FD on the faces classifier's features."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from ddmkit.errors import DdmkitError
from ddmkit.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_gaussians


def test_identical_sets_give_zero():
    f = np.random.default_rng(0).normal(size=(500, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    s = FeatureStats.from_features(f)
    assert frechet_distance(s, s) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(s, FeatureStats.from_features(f.copy())) == pytest.approx(0.0, abs=1e-6)


def test_stats_match_numpy_and_merge_of_halves_equals_whole():
    f = np.random.default_rng(2).normal(3.0, 2.0, size=(301, 8))
    whole = FeatureStats.from_features(f)
    np.testing.assert_allclose(whole.mean, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(whole.cov, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-12)
    a, b = FeatureStats.from_features(f[:100]), FeatureStats().update(f[100:200]).update(f[200:])
    merged = a.merge(b)
    assert merged.count == 301
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12)
    np.testing.assert_allclose(merged.outer, whole.outer, rtol=1e-12)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-10)
    back = FeatureStats.from_dict(whole.to_dict())
    assert back.count == whole.count and np.array_equal(back.outer, whole.outer)


def test_known_gaussians_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance_gaussians([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0)
    # diagonal: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    want = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_gaussians(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want)
    # general: tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), computed another way
    rng = np.random.default_rng(3)
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T + 0.1 * np.eye(6)
    r1 = linalg.sqrtm(c1).real
    want = np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.linalg.eigvalsh(r1 @ c2 @ r1).clip(0)).sum()
    assert frechet_distance_gaussians(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(want, rel=1e-7)


def test_singular_covariances_stay_finite():
    f = np.random.default_rng(4).normal(size=(50, 3)) @ np.random.default_rng(5).normal(size=(3, 20))  # rank 3
    g = np.random.default_rng(6).normal(size=(50, 3)) @ np.random.default_rng(7).normal(size=(3, 20))
    d = frechet_distance(FeatureStats.from_features(f), FeatureStats.from_features(g))
    assert np.isfinite(d) and d > 0


def test_bad_features_raise():
    with pytest.raises(DdmkitError):
        FeatureStats().update(np.zeros(5))
    with pytest.raises(DdmkitError):
        FeatureStats().update(np.array([[np.nan, 1.0]]))
    with pytest.raises(DdmkitError):
        FeatureStats.from_features(np.zeros((3, 2))).merge(FeatureStats.from_features(np.zeros((3, 4))))
    with pytest.raises(DdmkitError):
        FeatureStats.from_features(np.zeros((1, 2))).cov


def test_fd_faces_small_for_data_large_for_noise():
    from ddmkit.data.faces import sample_faces, to_tensor_range
    from ddmkit.metrics.classifiers import load_attribute_classifier

    clf = load_attribute_classifier("faces")

    def stats(x):
        return FeatureStats.from_features(clf.extract(x)[0])

    a = stats(to_tensor_range(sample_faces(600, seed=501)[0]))
    b = stats(to_tensor_range(sample_faces(600, seed=502)[0]))
    noise = stats(np.random.default_rng(0).uniform(-1, 1, size=(600, 3, 32, 32)).astype(np.float32))
    blurred = to_tensor_range(sample_faces(600, seed=503)[0])
    blurred = (blurred + np.roll(blurred, 1, axis=2) + np.roll(blurred, 1, axis=3)) / 3  # a cruder generator
    d_data, d_noise, d_blur = frechet_distance(a, b), frechet_distance(a, noise), frechet_distance(a, stats(blurred))
    assert d_data < 0.05 * d_noise
    assert d_data < d_blur < d_noise


def test_classifier_features_and_shapes():
    from ddmkit.metrics.classifiers import load_attribute_classifier

    clf = load_attribute_classifier("digits")
    f, p = clf.extract(np.zeros((3, 1, 32, 32), np.float32) - 1)
    assert f.shape == (3, 128) and p.shape == (3, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(DdmkitError):
        load_attribute_classifier("cats")
