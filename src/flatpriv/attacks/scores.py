"""Per-example membership statistics from logits, and threshold attacks (numpy only, never torch).

Symbols: logits z ∈ R^C of one model on one example, p = softmax(z), true label y.

- loss (cross-entropy) ℓ = −log p_y, computed as logsumexp(z) − z_y;
- confidence p_y;
- modified entropy (Song & Mittal 2021, "Systematic Evaluation of Privacy Risks of Machine Learning Models")
  Mentr(p, y) = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i);
- logit-scaled confidence (Carlini et al. 2022, "Membership Inference Attacks From First Principles", LiRA)
  φ = log(p_y + 1e-45) − log(Σ_{y'≠y} p_{y'} + 1e-45).

Numerics. φ is computed as z_y − logsumexp_{y'≠y} z_{y'}: since p_y / Σ_{y'≠y} p_{y'} = e^{z_y} / Σ_{y'≠y} e^{z_{y'}}
this *is* the formula (the 1e-45 only guards log 0 in float32 code, where it caps |φ| near 103), but it never
rounds 1 − p_y to 0 and stays finite for logits of ±1000. In Mentr, log p_y is the exact log-softmax,
1 − p_y is Σ_{i≠y} p_i (no cancellation), and p_i is clipped to at most 1 − 1e-16 inside log(1 − p_i), so a
confidently wrong prediction gives a large finite value, never inf.

Threshold attacks (Yeom et al. 2018; Song & Mittal 2021) predict "member" when a *membership score* s ≥ τ; every
score here is oriented so that LARGER means "member" (:func:`threshold_scores`): s = −ℓ, s = p_y, s = −Mentr or
s = φ.

Per-class thresholds (:func:`per_class_standardize`, :func:`per_class_calibrate`). Instead of searching one τ_c
per class, scores are standardised with the class's *non-member* reference statistics,
s̃ = (s − μ_c) / σ_c, μ_c and σ_c = mean and std of reference non-member scores of class c (e.g. the OUT scores of
shadow models). One global threshold τ on s̃ is the per-class threshold τ_c = μ_c + τ σ_c, which puts every class at
the same z-score of its own non-member distribution (equal per-class FPR when those are Gaussian), so the usual
ROC/AUC machinery on s̃ evaluates the per-class attack over all thresholds at once. Classes with fewer than
``min_count`` reference scores fall back to the pooled reference mean/std.

Shapes: ``logits`` is [..., N, C] (e.g. [K, N, C] for a pool of K models), ``labels`` is [N] (or any shape that
broadcasts to logits.shape[:-1]); every statistic is float64 with shape logits.shape[:-1].
"""

from __future__ import annotations

import numpy as np

from ..errors import FlatprivError

THRESHOLD_KINDS = ("loss", "confidence", "mentr", "phi")
_P_MAX = 1.0 - 1e-16


def _prepare(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits [..., C] and a boolean one-hot mask of the true class, same shape."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim < 2 or z.shape[-1] < 2:
        raise FlatprivError(f"logits must have shape [..., N, C] with C >= 2 classes, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise FlatprivError("logits contain NaN or inf; membership statistics need finite logits")
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise FlatprivError(f"labels must be integers, got dtype {y.dtype}")
    try:
        y = np.broadcast_to(y, z.shape[:-1])
    except ValueError:
        raise FlatprivError(f"labels of shape {y.shape} do not match logits of shape {z.shape}") from None
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise FlatprivError(f"labels must lie in [0, {z.shape[-1]}), got range [{y.min()}, {y.max()}]")
    is_y = np.arange(z.shape[-1]) == y[..., None]
    return z, is_y


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """logsumexp over the last axis (entries may be -inf, but not all of them)."""
    m = z.max(axis=-1)
    return m + np.log(np.exp(z - m[..., None]).sum(axis=-1))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return z - _logsumexp(z)[..., None]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, max-subtracted, float64."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def true_class_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y = softmax(z)_y."""
    z, is_y = _prepare(logits, labels)
    return np.exp(_log_softmax(z)[is_y]).reshape(z.shape[:-1])


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The confidence attack's statistic p_y (same as :func:`true_class_prob`)."""
    return true_class_prob(logits, labels)


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy ℓ = −log p_y = logsumexp(z) − z_y."""
    z, is_y = _prepare(logits, labels)
    return -_log_softmax(z)[is_y].reshape(z.shape[:-1])


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mentr = −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i) (Song & Mittal 2021); small means "member"."""
    z, is_y = _prepare(logits, labels)
    logp = _log_softmax(z)
    p = np.exp(logp)
    log_py = logp[is_y].reshape(z.shape[:-1])
    p_other = np.where(is_y, 0.0, p)
    one_minus_py = p_other.sum(axis=-1)
    term_other = (p_other * np.log1p(-np.minimum(p_other, _P_MAX))).sum(axis=-1)
    return -one_minus_py * log_py - term_other


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's φ = log(p_y + 1e-45) − log(Σ_{y'≠y} p_{y'} + 1e-45), computed as z_y − logsumexp_{y'≠y} z_{y'}."""
    z, is_y = _prepare(logits, labels)
    z_y = z[is_y].reshape(z.shape[:-1])
    return z_y - _logsumexp(np.where(is_y, -np.inf, z))


def threshold_scores(kind: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membership scores (larger = member) of a threshold attack: ``loss`` → −ℓ, ``confidence`` → p_y,
    ``mentr`` → −Mentr, ``phi`` → φ."""
    if kind == "loss":
        return -loss(logits, labels)
    if kind == "confidence":
        return confidence(logits, labels)
    if kind == "mentr":
        return -modified_entropy(logits, labels)
    if kind == "phi":
        return logit_scaled_confidence(logits, labels)
    raise FlatprivError(f"unknown threshold attack {kind!r}; choose one of {', '.join(THRESHOLD_KINDS)}")


def per_class_standardize(
    scores: np.ndarray,
    labels: np.ndarray,
    ref_scores: np.ndarray,
    ref_labels: np.ndarray,
    min_count: int = 2,
) -> np.ndarray:
    """(s − μ_c) / σ_c with μ_c, σ_c the mean and std (ddof 0) of the reference (non-member) scores of class c.

    ``scores`` [..., N] with ``labels`` broadcasting to it; ``ref_scores`` and ``ref_labels`` are flat (or equal
    shaped) arrays. Classes with fewer than ``min_count`` finite reference scores use the pooled reference
    statistics; σ is floored at 1e-12. NaN scores stay NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    rs = np.asarray(ref_scores, dtype=np.float64).ravel()
    ry = np.asarray(ref_labels).ravel()
    if rs.shape != ry.shape:
        raise FlatprivError(f"ref_scores ({rs.size}) and ref_labels ({ry.size}) must have the same size")
    if not (np.issubdtype(y.dtype, np.integer) and np.issubdtype(ry.dtype, np.integer)):
        raise FlatprivError("labels and ref_labels must be integers")
    try:
        y = np.broadcast_to(y, s.shape)
    except ValueError:
        raise FlatprivError(f"labels of shape {y.shape} do not match scores of shape {s.shape}") from None
    ok = np.isfinite(rs)
    rs, ry = rs[ok], ry[ok]
    if rs.size < 2:
        raise FlatprivError("per-class calibration needs at least 2 finite reference (non-member) scores")
    if (y.size and y.min() < 0) or ry.min() < 0:
        raise FlatprivError("labels must be non-negative class indices")
    n_classes = int(max(y.max() if y.size else 0, ry.max())) + 1
    count = np.bincount(ry, minlength=n_classes).astype(np.float64)
    mean = np.bincount(ry, weights=rs, minlength=n_classes) / np.maximum(count, 1)
    var = np.bincount(ry, weights=(rs - mean[ry]) ** 2, minlength=n_classes) / np.maximum(count, 1)
    few = count < max(int(min_count), 1)
    mean[few] = rs.mean()
    var[few] = rs.var()
    sigma = np.maximum(np.sqrt(var), 1e-12)
    return (s - mean[y]) / sigma[y]


def per_class_calibrate(
    target_scores: np.ndarray,
    shadow_scores: np.ndarray,
    shadow_keep: np.ndarray,
    labels: np.ndarray,
    min_count: int = 2,
) -> np.ndarray:
    """Per-class standardisation of a target model's scores [N] against the shadows' OUT scores.

    ``shadow_scores`` and ``shadow_keep`` are [S, N] (score of shadow s on example i, and whether s trained on
    i); the reference for class c is every OUT score (keep False) of an example of class c. The argument order
    matches :func:`flatpriv.attacks.lira.lira_scores`, so ``functools.partial(per_class_calibrate, labels=y)``
    is an ``attack_fn`` for :func:`flatpriv.attacks.lira.leave_one_out`.
    """
    sh = np.asarray(shadow_scores, dtype=np.float64)
    keep = np.asarray(shadow_keep, dtype=bool)
    y = np.asarray(labels)
    if sh.ndim != 2 or keep.shape != sh.shape or y.shape != (sh.shape[1],):
        raise FlatprivError(
            f"shadow_scores {sh.shape} and shadow_keep {keep.shape} must be [S, N] with labels [N], got {y.shape}"
        )
    out = ~keep
    ref_labels = np.broadcast_to(y, sh.shape)[out]
    return per_class_standardize(target_scores, y, sh[out], ref_labels, min_count=min_count)


def per_class_leave_one_out(
    keep: np.ndarray, stat: np.ndarray, labels: np.ndarray, min_count: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`per_class_calibrate` for every pool model as the target at once: returns (scores [K, N], keep).

    Per-class sums of the OUT scores over all models, minus the target's own, give each target's reference mean
    and variance (ddof 0) in O(K·N) instead of K separate calibrations. Classes with fewer than ``min_count``
    reference scores fall back to the pooled reference, as in :func:`per_class_standardize`.
    """
    s = np.asarray(stat, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    y = np.asarray(labels)
    if s.ndim != 2 or keep.shape != s.shape or y.shape != (s.shape[1],):
        raise FlatprivError(f"stat {s.shape} and keep {keep.shape} must be [K, N] with labels [N], got {y.shape}")
    k, _ = s.shape
    c = int(y.max()) + 1
    out = ~keep & np.isfinite(s)
    w = np.where(out, s, 0.0)
    cell = (y[None, :] + c * np.arange(k)[:, None]).ravel()

    def per_model(weights: np.ndarray) -> np.ndarray:
        return np.bincount(cell, weights=weights.ravel(), minlength=k * c).reshape(k, c)

    n_k, s1_k, s2_k = per_model(out.astype(np.float64)), per_model(w), per_model(w * w)
    n, s1, s2 = n_k.sum(0) - n_k, s1_k.sum(0) - s1_k, s2_k.sum(0) - s2_k  # everything but the target
    mean = s1 / np.maximum(n, 1)
    var = np.maximum(s2 / np.maximum(n, 1) - mean**2, 0.0)
    n_all, s1_all, s2_all = n.sum(1, keepdims=True), s1.sum(1, keepdims=True), s2.sum(1, keepdims=True)
    pooled_mean = s1_all / np.maximum(n_all, 1)
    pooled_var = np.maximum(s2_all / np.maximum(n_all, 1) - pooled_mean**2, 0.0)
    few = n < max(int(min_count), 1)
    mean = np.where(few, pooled_mean, mean)
    var = np.where(few, pooled_var, var)
    sigma = np.maximum(np.sqrt(var), 1e-12)
    rows = np.arange(k)[:, None]
    return (s - mean[rows, y[None, :]]) / sigma[rows, y[None, :]], keep
