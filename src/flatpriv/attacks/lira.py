"""LiRA, the likelihood-ratio membership attack (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"), on arrays of per-model statistics (numpy/scipy only, never torch).

Each of S shadow models trains on a random half of the N candidates (``shadow_keep[s, i]``: s trained on i) and
reports φ_{s,i}, the logit-scaled confidence (:func:`flatpriv.attacks.scores.logit_scaled_confidence`). For
example i, let IN_i / OUT_i be the φ of the shadows that did / did not train on i:

- μ_in, μ_out = median(IN_i), median(OUT_i);
- σ_in, σ_out = per-example std (ddof 1) of IN_i, OUT_i, or with ``fixed_variance`` one global std per side,
  the pooled within-example std sqrt(Σ_i Σ_{x∈IN_i} (x − mean(IN_i))² / Σ_i (|IN_i| − 1)) (same for OUT), which
  is what makes LiRA work with few shadows;
- online score  Λ = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²);
- offline score log Φ((φ − μ_out) / σ_out), the one-sided test of φ against N(μ_out, σ_out²) from OUT shadows only.
  The paper's score is Φ(·); its log ranks identically and keeps resolving members beyond z ≈ 8, where Φ = 1.

Larger scores mean "member" in both. An example with fewer than ``min_shadows`` IN (online only) or OUT shadows
gets a NaN score (the metrics drop and count NaNs); per-example σ needs at least 2 values, so per-example variance
with ``min_shadows`` = 1 can still give NaN. σ is floored at 1e-12 so that constant φ never divides by zero.

Evaluation (:func:`leave_one_out`): each of the K pool models in turn is the target and the other K − 1 are its
shadows; scores and membership labels (= keep) are pooled over targets. For LiRA this is vectorised: per example
and side the φ values are sorted once, and dropping the target's own value from a sorted list of n shifts the
median positions (n − 2)//2, (n − 1)//2 of the n − 1 remaining values by one past the target's rank, so every
leave-one-out median is O(1); leave-one-out sums of squares use SS' = SS − (x − mean)² n / (n − 1).
The medians are bit-identical to recomputing them per target, the σ's agree to rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import log_ndtr

from ..errors import FlatprivError

_SIGMA_FLOOR = 1e-12
_CANCELLATION = 64 * np.finfo(np.float64).eps


class GaussianParams(NamedTuple):
    """The shadow statistics LiRA fits, one entry per example (or per target × example)."""

    mu_in: np.ndarray
    sigma_in: np.ndarray
    n_in: np.ndarray
    mu_out: np.ndarray
    sigma_out: np.ndarray
    n_out: np.ndarray


def _check_pool(stat: np.ndarray, keep: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(stat, dtype=np.float64)
    k = np.asarray(keep)
    if x.ndim != 2 or k.shape != x.shape:
        raise FlatprivError(f"{what} must be [models, examples] arrays of the same shape, got {x.shape} and {k.shape}")
    if k.dtype != bool:
        if not np.all((k == 0) | (k == 1)):
            raise FlatprivError("keep must be boolean (or 0/1)")
        k = k.astype(bool)
    if not np.all(np.isfinite(x)):
        raise FlatprivError(f"{what}: the statistic contains NaN or inf")
    return x, k


def _median_of_sorted(srt: np.ndarray, n: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Median of the first n entries of each column of ``srt`` (sorted along axis 0); with ``skip``, of the first
    n + 1 entries less the one at sorted position ``skip``. NaN where n <= 0."""
    lo = np.maximum((n - 1) // 2, 0)
    hi = np.maximum(n // 2, 0)
    if skip is not None:
        lo = lo + (lo >= skip)
        hi = hi + (hi >= skip)
    top = srt.shape[0] - 1
    flat = lo.ndim == 1
    lo, hi = (np.minimum(v, top)[None] if flat else np.minimum(v, top) for v in (lo, hi))
    a, b = np.take_along_axis(srt, lo, axis=0), np.take_along_axis(srt, hi, axis=0)
    if flat:
        a, b = a[0], b[0]
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, (a + b) / 2, np.nan)


def _side(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For one side (IN or OUT): count n [N], column-sorted values (side first, +inf after) [S, N], sorted rank of
    every entry [S, N], mean [N] and sum of squared deviations [N]."""
    n = mask.sum(axis=0)
    masked = np.where(mask, x, np.inf)
    order = np.argsort(masked, axis=0, kind="stable")
    srt = np.take_along_axis(masked, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(x.shape[0])[:, None], order.shape), axis=0)
    mean = np.where(mask, x, 0.0).sum(axis=0) / np.maximum(n, 1)
    ss = (np.where(mask, x - mean, 0.0) ** 2).sum(axis=0)
    return n, srt, rank, mean, ss


def _sigma(ss: np.ndarray, n: np.ndarray, fixed_variance: bool) -> np.ndarray:
    """Per-example std (ddof 1) along the last axis's entries, or the pooled one over the last axis."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if fixed_variance:
            dof = np.maximum(n - 1, 0).sum(axis=-1, keepdims=True)
            pooled = np.sqrt(ss.sum(axis=-1, keepdims=True) / dof)
            sigma = np.broadcast_to(np.where(dof > 0, pooled, np.nan), ss.shape).copy()
        else:
            sigma = np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)
    return np.maximum(sigma, _SIGMA_FLOOR)


def lira_params(shadow_phi: np.ndarray, shadow_keep: np.ndarray, fixed_variance: bool = False) -> GaussianParams:
    """μ, σ and counts of the IN and OUT shadows of every example (arrays of length N)."""
    x, keep = _check_pool(shadow_phi, shadow_keep, "shadow_phi/shadow_keep")
    sides = []
    for mask in (keep, ~keep):
        n, srt, _, _, ss = _side(x, mask)
        sides.append((_median_of_sorted(srt, n), _sigma(ss, n, fixed_variance), n))
    return GaussianParams(*sides[0], *sides[1])


def leave_one_out_params(keep: np.ndarray, stat: np.ndarray, fixed_variance: bool = False) -> GaussianParams:
    """:func:`lira_params` of every pool model's shadows (all other models), as [K, N] arrays, in one pass."""
    x, k = _check_pool(stat, keep, "stat/keep")
    if x.shape[0] < 2:
        raise FlatprivError(f"leave-one-out needs at least 2 pool models, got {x.shape[0]}")
    sides = []
    for mask in (k, ~k):
        n, srt, rank, mean, ss = _side(x, mask)
        # Statistics of the side without the target's own value (only used where the target is on this side).
        med_minus = _median_of_sorted(srt, np.broadcast_to(n - 1, x.shape), skip=rank)
        with np.errstate(invalid="ignore", divide="ignore"):
            ss_minus = np.where(n >= 2, ss - (x - mean) ** 2 * n / np.maximum(n - 1, 1), 0.0)
        ss_minus[ss_minus <= _CANCELLATION * ss] = 0.0  # what is left of SS after the subtraction is rounding
        n_sh = n - mask
        mu = np.where(mask, med_minus, _median_of_sorted(srt, n))
        ss_sh = np.where(mask, ss_minus, ss)
        sides.append((mu, _sigma(ss_sh, n_sh, fixed_variance), n_sh))
    return GaussianParams(*sides[0], *sides[1])


def scores_from_params(
    phi: np.ndarray, params: GaussianParams, online: bool = True, min_shadows: int = 2
) -> np.ndarray:
    """LiRA scores of target statistics ``phi`` under fitted ``params`` (same shapes); NaN where too few shadows."""
    if min_shadows < 1:
        raise FlatprivError(f"min_shadows must be >= 1, got {min_shadows}")
    phi = np.asarray(phi, dtype=np.float64)
    p = params
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z_out = (phi - p.mu_out) / p.sigma_out
        if online:
            z_in = (phi - p.mu_in) / p.sigma_in
            score = np.log(p.sigma_out / p.sigma_in) - 0.5 * z_in**2 + 0.5 * z_out**2
            valid = (p.n_in >= min_shadows) & (p.n_out >= min_shadows)
        else:
            score = log_ndtr(z_out)
            valid = p.n_out >= min_shadows
    return np.where(valid, score, np.nan)


def lira_scores(
    target_phi: np.ndarray,
    shadow_phi: np.ndarray,
    shadow_keep: np.ndarray,
    online: bool = True,
    fixed_variance: bool = False,
    min_shadows: int = 2,
) -> np.ndarray:
    """LiRA membership scores [N] of one target model's φ [N] from shadows' φ [S, N] and keep [S, N]."""
    phi = np.asarray(target_phi, dtype=np.float64)
    shadow = np.asarray(shadow_phi)
    if phi.ndim != 1 or shadow.ndim != 2 or phi.shape[0] != shadow.shape[1]:
        raise FlatprivError(f"target_phi must be [N] and shadow_phi [S, N], got {phi.shape} and {shadow.shape}")
    params = lira_params(shadow, shadow_keep, fixed_variance)
    return scores_from_params(phi, params, online=online, min_shadows=min_shadows)


@dataclass(frozen=True)
class LiRA:
    """A configured LiRA attack: call it like :func:`lira_scores` on one target, or pass it to
    :func:`leave_one_out`, which then uses the vectorised :meth:`leave_one_out`."""

    online: bool = True
    fixed_variance: bool = False
    min_shadows: int = 2

    def __call__(self, target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_keep: np.ndarray) -> np.ndarray:
        return lira_scores(target_phi, shadow_phi, shadow_keep, self.online, self.fixed_variance, self.min_shadows)

    def leave_one_out(self, keep: np.ndarray, stat: np.ndarray) -> np.ndarray:
        params = leave_one_out_params(keep, stat, self.fixed_variance)
        return scores_from_params(stat, params, online=self.online, min_shadows=self.min_shadows)


AttackFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def leave_one_out(keep: np.ndarray, stat: np.ndarray, attack_fn: AttackFn) -> tuple[np.ndarray, np.ndarray]:
    """Score every pool model as the target with the others as shadows: returns (scores [K, N], members [K, N]).

    ``attack_fn(target_stat [N], shadow_stat [K-1, N], shadow_keep [K-1, N]) -> scores [N]``. A :class:`LiRA`
    instance, or ``functools.partial(lira_scores, ...)`` with keyword arguments only, takes the vectorised path;
    any other callable is called once per target. ``members`` is a copy of ``keep``.
    """
    x, k = _check_pool(stat, keep, "stat/keep")
    if x.shape[0] < 2:
        raise FlatprivError(f"leave-one-out needs at least 2 pool models, got {x.shape[0]}")
    fast = getattr(attack_fn, "leave_one_out", None)
    if isinstance(attack_fn, functools.partial) and attack_fn.func is lira_scores and not attack_fn.args:
        fast = LiRA(**attack_fn.keywords).leave_one_out
    if callable(fast):
        scores = np.asarray(fast(k, x), dtype=np.float64)
    else:
        scores = np.empty_like(x)
        for t in range(x.shape[0]):
            others = np.arange(x.shape[0]) != t
            scores[t] = attack_fn(x[t], x[others], k[others])
    if scores.shape != x.shape:
        raise FlatprivError(f"attack_fn returned scores of shape {scores.shape}, expected {x.shape}")
    return scores, k.copy()
