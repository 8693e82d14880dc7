"""flatpriv.memorization.influence: influence entropy, entropy buckets, bucket comparison, histogram."""

from __future__ import annotations

import numpy as np
import pytest

from flatpriv.errors import FlatprivError
from flatpriv.memorization import bucket_comparison, entropy_buckets, influence_entropy, memorization_histogram

TRAIN_LABELS = np.array([0, 0, 0, 0, 1, 1, 1])  # 4 training points of class 0, 3 of class 1


def _entropy(infl: np.ndarray, test_labels: list[int], **kw: object) -> np.ndarray:
    return influence_entropy(np.asarray(infl, dtype=float), TRAIN_LABELS, np.array(test_labels), **kw)


def test_single_support_uniform_and_zero() -> None:
    infl = np.array(
        [
            [0.0, 0.7, 0.0, 0.0, 0.5, 0.5, 0.5],  # one class-0 point: 0
            [0.2, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0],  # uniform over the 4 class-0 points: log 4
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # nothing: the maximum, log 4
            [0.9, 0.9, 0.9, 0.9, -0.1, -0.3, -0.2],  # class 1, all negative: log 3
            [0.0, 0.0, 0.0, 0.0, 0.3, 0.3, np.nan],  # NaN counts as 0: log 2
        ]
    )
    h = _entropy(infl, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(h, [0.0, np.log(4), np.log(4), np.log(3), np.log(2)], atol=1e-12)


def test_only_same_class_points_count() -> None:
    rng = np.random.default_rng(0)
    infl = rng.normal(size=(6, 7))
    test_labels = [0, 0, 0, 1, 1, 1]
    h = _entropy(infl, test_labels)
    changed = infl.copy()
    changed[:3, 4:] = rng.normal(size=(3, 3)) * 10  # class-1 training points, class-0 test points
    changed[3:, :4] = rng.normal(size=(3, 4)) * 10
    np.testing.assert_array_equal(_entropy(changed, test_labels), h)
    assert not np.allclose(
        _entropy(changed, test_labels, same_class=False), _entropy(infl, test_labels, same_class=False)
    )


def test_modes_and_same_class_off_against_direct_formula() -> None:
    rng = np.random.default_rng(1)
    infl = rng.normal(size=(5, 7))
    for mode, transform in (("positive", lambda x: np.maximum(x, 0)), ("absolute", np.abs)):
        a = transform(infl)
        p = a / a.sum(axis=1, keepdims=True)
        direct = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)
        np.testing.assert_allclose(_entropy(infl, [0, 1, 0, 1, 0], mode=mode, same_class=False), direct)


def test_top_k() -> None:
    infl = np.array([[0.5, 0.3, 0.1, 0.1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    h2 = _entropy(infl, [0, 0], top_k=2)
    p = np.array([0.5, 0.3]) / 0.8
    np.testing.assert_allclose(h2, [-(p * np.log(p)).sum(), np.log(2)])
    np.testing.assert_allclose(_entropy(infl, [0, 0], top_k=10), _entropy(infl, [0, 0]))  # k ≥ class size: all
    np.testing.assert_allclose(_entropy(infl, [0, 0], top_k=1), [0.0, 0.0])


def test_chunked_rows_and_missing_class() -> None:
    rng = np.random.default_rng(2)
    infl = rng.normal(size=(9, 7))
    labels = [0, 1, 0, 1, 0, 1, 0, 1, 2]  # class 2 has no training point → NaN
    h = _entropy(infl, labels)
    np.testing.assert_array_equal(_entropy(infl, labels, max_elements=3), h)
    assert np.isnan(h[8]) and np.all(np.isfinite(h[:8]))


def test_entropy_rejects_bad_input() -> None:
    with pytest.raises(FlatprivError, match="labels disagree"):
        influence_entropy(np.zeros((2, 7)), TRAIN_LABELS, np.zeros(3, dtype=int))
    with pytest.raises(FlatprivError, match="mode"):
        influence_entropy(np.zeros((2, 7)), TRAIN_LABELS, np.zeros(2, dtype=int), mode="squared")  # type: ignore[arg-type]
    with pytest.raises(FlatprivError, match="top_k"):
        influence_entropy(np.zeros((2, 7)), TRAIN_LABELS, np.zeros(2, dtype=int), top_k=0)


def test_equal_count_buckets() -> None:
    rng = np.random.default_rng(3)
    e = rng.random(103)
    b = entropy_buckets(e, 5)
    counts = np.bincount(b)
    assert counts.size == 5 and counts.max() - counts.min() <= 1
    for k in range(4):  # ordered: every entropy in bucket k is ≤ every entropy in bucket k + 1
        assert e[b == k].max() <= e[b == k + 1].min()
    ties = entropy_buckets(np.zeros(10), 5)
    np.testing.assert_array_equal(ties, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # stable: by index
    with_nan = entropy_buckets(np.array([0.3, np.nan, 0.1, 0.2]), 3)
    np.testing.assert_array_equal(with_nan, [2, -1, 0, 1])
    with pytest.raises(FlatprivError):
        entropy_buckets(np.zeros(3), 5)


def test_bucket_comparison() -> None:
    rng = np.random.default_rng(4)
    m = 500
    buckets = entropy_buckets(rng.random(m), 5)
    a = rng.random((6, m)) < 0.7  # a pool of 6 models
    b = rng.random(m) < np.where(buckets == 0, 0.95, 0.7)  # one model, better in bucket 0
    rows = bucket_comparison(buckets, a, b, n_boot=500, seed=1)
    assert [r["bucket"] for r in rows] == [0, 1, 2, 3, 4] and all(r["n"] == 100 for r in rows)
    for r in rows:
        idx = buckets == r["bucket"]
        assert r["acc_a"] == pytest.approx(a[:, idx].mean()) and r["acc_b"] == pytest.approx(b[idx].mean())
        assert r["diff"] == pytest.approx(r["acc_b"] - r["acc_a"])
        assert r["ci_low"] <= r["diff"] <= r["ci_high"]
    assert rows[0]["ci_low"] > 0  # the planted gain is detected
    same = bucket_comparison(buckets, a, a, n_boot=50)
    assert all(r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 for r in same)
    assert bucket_comparison(buckets, a, b, n_boot=500, seed=1) == rows  # seeded
    with pytest.raises(FlatprivError, match="correct_b"):
        bucket_comparison(buckets, a, b[:10])


def test_memorization_histogram() -> None:
    h = memorization_histogram(np.array([-1.0, 0.0, 0.05, 0.95, 1.0, np.nan, np.nan]), bins=20)
    assert h.n_excluded == 2 and h.counts.sum() == 5
    assert h.edges[0] == -1.0 and h.edges[-1] == 1.0 and h.counts.size == 20
    assert h.counts[0] == 1 and h.counts[10] == 2 and h.counts[19] == 2
