"""Feldman–Zhang subsampled memorization and influence estimators (numpy only, never torch).

Feldman & Zhang 2020, "What neural networks memorize and why: discovering the long tail via influence
estimation". A pool of K models is trained, model k on a random subset S_k of the N training examples.
With ``keep[k, i] = 1[i ∈ S_k]`` and ``corr[k, i]`` the correctness of model k on example i::

    mem(A, S, i)  = mean_k(corr[k, i] | i ∈ S_k) − mean_k(corr[k, i] | i ∉ S_k)
    infl(A, S, i, j) = mean_k(corr_test[k, j] | i ∈ S_k) − mean_k(corr_test[k, j] | i ∉ S_k)

``corr`` is 0/1 correctness (``argmax h_k(x_i) = y_i``) or, the probability variant, the softmax probability of
the true label. Inputs are what a pool saves: ``keep`` bool [K, N], train logits [K, N, C], test logits [K, M, C],
labels [N] and test labels [M]. Examples never held in (or never held out) get NaN, not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import FlatprivError

__all__ = ["MemResult", "check_pool", "correctness", "influence", "memorization"]


@dataclass(frozen=True)
class MemResult:
    """Per-example FZ memorization: ``score`` mem_i, its standard error, and how many models held i in / out."""

    score: np.ndarray
    stderr: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


def _as_keep(keep: np.ndarray) -> np.ndarray:
    keep = np.asarray(keep)
    if keep.dtype != np.bool_:
        raise FlatprivError(f"keep must be a boolean [K, N] array (got dtype {keep.dtype}); use keep.astype(bool)")
    if keep.ndim != 2:
        raise FlatprivError(f"keep must be a 2-D [K, N] array (got shape {keep.shape})")
    return keep


def _as_corr(corr: np.ndarray, n_models: int, name: str) -> np.ndarray:
    corr = np.asarray(corr, dtype=np.float64)
    if corr.ndim != 2 or corr.shape[0] != n_models:
        raise FlatprivError(f"{name} must be a [K, *] array with K = {n_models} models (got shape {corr.shape})")
    if not np.all(np.isfinite(corr)):
        raise FlatprivError(f"{name} contains NaN or inf values: corrupted arrays")
    return corr


def correctness(logits: np.ndarray, labels: np.ndarray, kind: Literal["correct", "prob"] = "correct") -> np.ndarray:
    """Per-model correctness [K, N] from logits [K, N, C] and labels [N].

    ``kind="correct"``: 1[argmax_c logits[k, i, c] = y_i] (FZ 2020). ``kind="prob"``: softmax probability of the true
    label, p_k(y_i | x_i) = exp(z_{y_i} − logsumexp(z)) (the probability variant), computed stably.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 3:
        raise FlatprivError(f"logits must be a [K, N, C] array (got shape {logits.shape})")
    if labels.shape != (logits.shape[1],) or not np.issubdtype(labels.dtype, np.integer):
        raise FlatprivError(
            f"labels must be integer [N] with N = {logits.shape[1]} (got {labels.dtype} {labels.shape})"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[2]):
        raise FlatprivError(f"labels must lie in [0, {logits.shape[2]}) for logits with {logits.shape[2]} classes")
    rows = np.arange(logits.shape[1])
    out = np.empty(logits.shape[:2], dtype=np.float64)
    for k in range(logits.shape[0]):  # one model at a time keeps the temporaries at [N, C]
        z = logits[k].astype(np.float64, copy=False)
        if kind == "correct":
            out[k] = np.argmax(z, axis=1) == labels
        elif kind == "prob":
            zmax = z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
            out[k] = np.exp(z[rows, labels] - lse)
        else:
            raise FlatprivError(f"kind must be 'correct' or 'prob' (got {kind!r})")
    return out


def memorization(keep: np.ndarray, corr: np.ndarray) -> MemResult:
    """FZ memorization per training example from ``keep`` bool [K, N] and ``corr`` [K, N].

    mem_i = mean_k(corr[k, i] | keep[k, i]) − mean_k(corr[k, i] | ¬keep[k, i]),
    SE_i = sqrt(s²_in / n_in + s²_out / n_out) with sample variances (ddof = 1).
    score is NaN where n_in = 0 or n_out = 0; stderr is NaN where n_in < 2 or n_out < 2.
    """
    keep = _as_keep(keep)
    corr = _as_corr(corr, keep.shape[0], "corr")
    if corr.shape != keep.shape:
        raise FlatprivError(f"corr shape {corr.shape} does not match keep shape {keep.shape}")
    w_in = keep.astype(np.float64)
    w_out = 1.0 - w_in
    n_in = w_in.sum(axis=0)
    n_out = w_out.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_in = (corr * w_in).sum(axis=0) / n_in
        mean_out = (corr * w_out).sum(axis=0) / n_out
        # Two-pass (centred) variances; the NaN means of empty groups are masked out by the weights' zeros.
        var_in = (np.nan_to_num(corr - mean_in) ** 2 * w_in).sum(axis=0) / (n_in - 1)
        var_out = (np.nan_to_num(corr - mean_out) ** 2 * w_out).sum(axis=0) / (n_out - 1)
        stderr = np.sqrt(var_in / n_in + var_out / n_out)
    score = np.where((n_in > 0) & (n_out > 0), mean_in - mean_out, np.nan)
    stderr = np.where((n_in > 1) & (n_out > 1), stderr, np.nan)
    return MemResult(score=score, stderr=stderr, n_in=n_in.astype(np.int64), n_out=n_out.astype(np.int64))


def influence(
    keep: np.ndarray,
    corr_test: np.ndarray,
    *,
    chunk: int | None = None,
    max_elements: int = 1 << 24,
    dtype: type = np.float32,
) -> np.ndarray:
    """FZ influence matrix [M, N] of training example i on test example j.

    infl[j, i] = mean_k(corr_test[k, j] | keep[k, i]) − mean_k(corr_test[k, j] | ¬keep[k, i])
               = (corr_testᵀ @ keep)[j, i] / n_in[i] − (corr_testᵀ @ (1 − keep))[j, i] / n_out[i].
    The second product is computed as Σ_k corr_test[k, j] − (corr_testᵀ @ keep)[j, i], which is the same number.
    Columns are processed ``chunk`` at a time (default: as many as keep the [M, chunk] float64 intermediates under
    ``max_elements``), so memory beyond the output stays bounded. Columns with n_in = 0 or n_out = 0 are NaN.
    """
    keep = _as_keep(keep)
    corr_test = _as_corr(corr_test, keep.shape[0], "corr_test")
    n_models, n_train = keep.shape
    n_test = corr_test.shape[1]
    if chunk is None:
        chunk = max(1, int(max_elements) // max(n_test, n_models, 1))
    if int(chunk) < 1:
        raise FlatprivError(f"chunk must be a positive integer (got {chunk})")
    chunk = int(chunk)
    ct = np.ascontiguousarray(corr_test.T)  # [M, K]
    total = ct.sum(axis=1, keepdims=True)  # [M, 1]
    n_in = keep.sum(axis=0).astype(np.float64)
    n_out = n_models - n_in
    out = np.empty((n_test, n_train), dtype=dtype)
    for start in range(0, n_train, chunk):
        stop = min(start + chunk, n_train)
        sum_in = ct @ keep[:, start:stop].astype(np.float64)  # [M, c]
        sum_out = total - sum_in
        a, b = n_in[start:stop], n_out[start:stop]
        with np.errstate(divide="ignore", invalid="ignore"):
            block = sum_in / a - sum_out / b
        block[:, (a == 0) | (b == 0)] = np.nan
        out[:, start:stop] = block
    return out


def check_pool(
    keep: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    min_models: int = 4,
    test_logits: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> None:
    """Validate what a pool saved before estimating; raise FlatprivError with a one-line message on bad input.

    Checks: ``keep`` is boolean [K, N]; ``logits`` is [K, N, C] and ``labels`` integer [N] in [0, C); the optional
    test arrays are [K, M, C] and [M]; every logit is finite; and K ≥ ``min_models``.
    """
    keep = _as_keep(keep)
    n_models, n_train = keep.shape
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 3 or logits.shape[:2] != (n_models, n_train):
        raise FlatprivError(f"logits shape {logits.shape} disagrees with keep shape {keep.shape}; expected [K, N, C]")
    if labels.shape != (n_train,):
        raise FlatprivError(f"labels shape {labels.shape} disagrees with keep's N = {n_train}")
    arrays = [("logits", logits, labels)]
    if (test_logits is None) != (test_labels is None):
        raise FlatprivError("test_logits and test_labels must be given together")
    if test_logits is not None:
        test_logits, test_labels = np.asarray(test_logits), np.asarray(test_labels)
        if test_logits.ndim != 3 or test_logits.shape[0] != n_models or test_logits.shape[2] != logits.shape[2]:
            raise FlatprivError(
                f"test_logits shape {test_logits.shape} disagrees with logits shape {logits.shape}; expected [K, M, C]"
            )
        if test_labels.shape != (test_logits.shape[1],):
            raise FlatprivError(f"test_labels shape {test_labels.shape} disagrees with test_logits' M")
        arrays.append(("test_logits", test_logits, test_labels))
    n_classes = logits.shape[2]
    for name, z, y in arrays:
        if not np.issubdtype(z.dtype, np.number) or not np.all(np.isfinite(z)):
            raise FlatprivError(f"{name} contains NaN, inf or non-numeric values: corrupted arrays")
        if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= n_classes)):
            raise FlatprivError(f"labels for {name} must be integers in [0, {n_classes})")
    if n_models < min_models:
        raise FlatprivError(f"a pool with too few models for the estimator: K = {n_models} < min_models = {min_models}")
