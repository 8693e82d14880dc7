"""Influence entropy (paper 1, Kim et al., arXiv 2310.00488) and the per-bucket comparison built on it (numpy only).

**[reconstruction]**: paper 1's text could not be checked; the metric is implemented as flatpriv's science
reference (§3.2) writes it, with its choices exposed as options. From the Feldman & Zhang 2020 influence matrix
``infl`` [M, N] ("What neural networks memorize and why"), per test point j::

    a_ij     = max(infl[j, i], 0)  over training points i with y_i = y_j     (options: |infl|; all i; top-k)
    p_ij     = a_ij / Σ_i a_ij                                                (if Σ_i a_ij = 0: I_ent(j) = log n)
    I_ent(j) = − Σ_i p_ij log p_ij

Low entropy: the test point relies on a few training points (atypical, needs memorization). Test points are then
sorted into equal-count buckets by I_ent and two optimizers' test accuracies compared bucket by bucket.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from scipy.special import entr

from ..errors import FlatprivError

__all__ = ["Histogram", "bucket_comparison", "entropy_buckets", "influence_entropy", "memorization_histogram"]


def _entropy_rows(a: np.ndarray, top_k: int | None) -> np.ndarray:
    """Entropy of each row of the non-negative weights ``a`` [m, n], normalised per row; log n for all-zero rows."""
    n = a.shape[1]
    if top_k is not None and top_k < n:
        a = np.partition(a, n - top_k, axis=1)[:, n - top_k :]  # the top-k values; ties do not change the entropy
        n = top_k
    total = a.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = entr(a / total[:, None]).sum(axis=1)  # entr(p) = −p log p, entr(0) = 0
    return np.where(total > 0, h, np.log(n) if n > 0 else np.nan)


def influence_entropy(
    infl: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    mode: Literal["positive", "absolute"] = "positive",
    same_class: bool = True,
    top_k: int | None = None,
    max_elements: int = 1 << 24,
) -> np.ndarray:
    """Influence entropy I_ent(j) [M] of each test point from ``infl`` [M, N] (paper 1, **[reconstruction]**).

    a_ij = max(infl[j, i], 0) (``mode="positive"``) or |infl[j, i]| (``mode="absolute"``), over training points i
    with y_i = y_j (``same_class=True``) or all i; with ``top_k`` only the k largest a_ij are kept.
    p_ij = a_ij / Σ_i a_ij and I_ent(j) = −Σ_i p_ij log p_ij. If Σ_i a_ij = 0 the entropy is its maximum log n, with
    n the number of candidates considered (class members, or min(k, class members) with ``top_k``). NaN influences
    (examples never held in or out) count as 0. A test point whose class has no training point gets NaN.
    Rows are processed a class (and a block of ``max_elements`` values) at a time.
    """
    infl = np.asarray(infl)
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    if infl.ndim != 2:
        raise FlatprivError(f"infl must be a 2-D [M, N] array (got shape {infl.shape})")
    n_test, n_train = infl.shape
    if train_labels.shape != (n_train,) or test_labels.shape != (n_test,):
        raise FlatprivError(
            f"labels disagree with infl [M, N] = {infl.shape}: train {train_labels.shape}, test {test_labels.shape}"
        )
    if mode not in ("positive", "absolute"):
        raise FlatprivError(f"mode must be 'positive' or 'absolute' (got {mode!r})")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise FlatprivError(f"top_k must be a positive integer or None (got {top_k})")

    if same_class:
        groups = [(np.flatnonzero(test_labels == c), np.flatnonzero(train_labels == c)) for c in np.unique(test_labels)]
    else:
        groups = [(np.arange(n_test), np.arange(n_train))]
    out = np.full(n_test, np.nan)
    for rows, cols in groups:
        step = max(1, int(max_elements) // max(cols.size, 1))
        for start in range(0, rows.size, step):
            r = rows[start : start + step]
            a = np.nan_to_num(infl[np.ix_(r, cols)].astype(np.float64), nan=0.0)
            a = np.maximum(a, 0.0) if mode == "positive" else np.abs(a)
            out[r] = _entropy_rows(a, top_k)
    return out


def entropy_buckets(entropy: np.ndarray, n_buckets: int = 5) -> np.ndarray:
    """Equal-count buckets [M] by entropy: bucket 0 holds the lowest entropies, sizes differ by at most one.

    Ties are broken stably (by index). NaN entropies get bucket −1 and are left out of the equal-count split.
    """
    entropy = np.asarray(entropy, dtype=np.float64)
    if entropy.ndim != 1:
        raise FlatprivError(f"entropy must be a 1-D [M] array (got shape {entropy.shape})")
    finite = np.flatnonzero(~np.isnan(entropy))
    if n_buckets < 1 or finite.size < n_buckets:
        raise FlatprivError(f"need n_buckets >= 1 and at least n_buckets finite entropies ({finite.size}, {n_buckets})")
    order = finite[np.argsort(entropy[finite], kind="stable")]
    buckets = np.full(entropy.shape, -1, dtype=np.int64)
    buckets[order] = np.arange(order.size) * n_buckets // order.size
    return buckets


def _per_point_accuracy(correct: np.ndarray, n_test: int, name: str) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim not in (1, 2) or correct.shape[-1] != n_test:
        raise FlatprivError(f"{name} must be [M] or [K, M] with M = {n_test} (got shape {correct.shape})")
    return correct if correct.ndim == 1 else correct.mean(axis=0)


def bucket_comparison(
    buckets: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    entropy: np.ndarray | None = None,
) -> list[dict[str, float | int]]:
    """Per-bucket test accuracy of A and B and the difference B − A with a paired percentile-bootstrap CI.

    ``correct_a`` / ``correct_b`` are [M] (one model) or [K_a, M] / [K_b, M] (a pool: per-point accuracy is the mean
    over models). Within a bucket the test points are resampled with replacement (the same draw for A and B, which
    see the same test points) ``n_boot`` times. Returns one dict per bucket (ids ≥ 0, ascending): ``bucket``, ``n``,
    ``acc_a``, ``acc_b``, ``diff``, ``ci_low``, ``ci_high`` and, with ``entropy``, ``entropy_min`` / ``entropy_max``.
    """
    buckets = np.asarray(buckets)
    if buckets.ndim != 1:
        raise FlatprivError(f"buckets must be a 1-D [M] array (got shape {buckets.shape})")
    pa = _per_point_accuracy(correct_a, buckets.size, "correct_a")
    pb = _per_point_accuracy(correct_b, buckets.size, "correct_b")
    if n_boot < 1 or not 0 < level < 1:
        raise FlatprivError(f"need n_boot >= 1 and 0 < level < 1 (got {n_boot}, {level})")
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    rows: list[dict[str, float | int]] = []
    for b in np.unique(buckets[buckets >= 0]):
        idx = np.flatnonzero(buckets == b)
        d = pb[idx] - pa[idx]
        boot = np.empty(n_boot)
        per = max(1, (1 << 22) // idx.size)  # bootstrap replicates per block, bounding the index matrix
        for s in range(0, n_boot, per):
            draw = rng.integers(0, idx.size, size=(min(per, n_boot - s), idx.size))
            boot[s : s + draw.shape[0]] = d[draw].mean(axis=1)
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        row: dict[str, float | int] = {
            "bucket": int(b),
            "n": int(idx.size),
            "acc_a": float(pa[idx].mean()),
            "acc_b": float(pb[idx].mean()),
            "diff": float(d.mean()),
            "ci_low": float(lo),
            "ci_high": float(hi),
        }
        if entropy is not None:
            e = np.asarray(entropy, dtype=np.float64)[idx]
            row["entropy_min"], row["entropy_max"] = float(np.nanmin(e)), float(np.nanmax(e))
        rows.append(row)
    return rows


class Histogram(NamedTuple):
    counts: np.ndarray
    edges: np.ndarray
    n_excluded: int


def memorization_histogram(scores: np.ndarray, bins: int = 20, range: tuple[float, float] = (-1.0, 1.0)) -> Histogram:
    """Histogram of memorization scores over the fixed ``range`` (mem ∈ [−1, 1], so pools compare bin for bin).

    NaN scores (examples never held in or out) are excluded and counted in ``n_excluded``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    nan = np.isnan(scores)
    counts, edges = np.histogram(scores[~nan], bins=bins, range=range)
    return Histogram(counts=counts, edges=edges, n_excluded=int(nan.sum()))
