"""LiRA as the reference code scores it (Carlini et al. 2022; tensorflow/privacy ``research/mi_lira_2021/plot.py``),
next to the paper's description in :mod:`.lira` (numpy/scipy only, never torch).

With φ the target's logit-scaled confidence on example i and μ_in, μ_out the medians of the shadows' φ on i with i
IN / OUT (as in :mod:`.lira`), the reference code differs from the paper's text in two places:

- **fixed-variance online** (:class:`LiRARefFixed`): σ_in = σ_out = std of *all* the IN shadows' values, over every
  example together (numpy's ``np.std`` of the whole IN array: ddof 0, around the grand mean, so it includes the
  spread of μ_in across examples); score Λ = log N(φ; μ_in, σ²) − log N(φ; μ_out, σ²). The paper describes one
  global variance per side instead (:class:`flatpriv.attacks.lira.LiRA` with ``fixed_variance=True``: the pooled
  within-example std of each side).
- **offline** (:class:`LiRATwoSided`): score −log N(φ; μ_out, σ_out²) = log σ_out + ½((φ − μ_out)/σ_out)² + ½ log 2π,
  a two-sided statistic (large when φ is far from μ_out on either side), with σ_out the per-example std of the
  OUT values with ddof 0 (``np.std``), or with ``fixed_variance`` the std of all OUT values (ddof 0, grand mean).
  The paper's test is one-sided, Φ((φ − μ_out)/σ_out) (:class:`flatpriv.attacks.lira.LiRA` with ``online=False``).

Not reproduced: the reference code first truncates every example's IN and OUT lists to the shortest one (to make
rectangular arrays) and averages scores over augmentations; here every shadow counts. σ is floored at 1e-12
(the reference code adds 1e-30). Larger scores mean "member"; NaN where fewer than ``min_shadows`` shadows (OUT, or
IN and OUT online) hold the needed side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lira import _SIGMA_FLOOR, GaussianParams, _check_pool, leave_one_out_params, lira_params

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


def _global_std(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """std (ddof 0, around the grand mean) from sums of values, of squares and the count."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean**2, 0.0)
    return np.where(n > 0, np.maximum(np.sqrt(var), _SIGMA_FLOOR), np.nan)


def _ddof0(params: GaussianParams) -> np.ndarray:
    """Per-example OUT std with ddof 0 from :mod:`.lira`'s ddof-1 one: σ₀ = σ₁ √((n − 1)/n) (0 → floor for n = 1)."""
    n = params.n_out
    with np.errstate(invalid="ignore", divide="ignore"):
        s0 = np.where(n >= 2, params.sigma_out * np.sqrt(np.maximum(n - 1, 0) / np.maximum(n, 1)), 0.0)
    return np.where(n >= 1, np.maximum(s0, _SIGMA_FLOOR), np.nan)


def _side_sums(x: np.ndarray, mask: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.where(mask, x, 0.0)
    return v.sum(axis=axis), (v * v).sum(axis=axis), mask.sum(axis=axis)


def _online(phi: np.ndarray, p: GaussianParams, sigma: np.ndarray, min_shadows: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z_in, z_out = (phi - p.mu_in) / sigma, (phi - p.mu_out) / sigma
        score = 0.5 * z_out**2 - 0.5 * z_in**2
    return np.where((p.n_in >= min_shadows) & (p.n_out >= min_shadows), score, np.nan)


def _two_sided(phi: np.ndarray, p: GaussianParams, sigma: np.ndarray, min_shadows: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = (phi - p.mu_out) / sigma
        score = np.log(sigma) + 0.5 * z**2 + _HALF_LOG_2PI
    return np.where(p.n_out >= min_shadows, score, np.nan)


@dataclass(frozen=True)
class LiRARefFixed:
    """Online LiRA, fixed variance as the reference code computes it: σ_in = σ_out = std of all IN values."""

    min_shadows: int = 1

    def __call__(self, target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_keep: np.ndarray) -> np.ndarray:
        x, k = _check_pool(shadow_phi, shadow_keep, "shadow_phi/shadow_keep")
        params = lira_params(x, k)
        s1, s2, n = _side_sums(x, k, None)
        return _online(np.asarray(target_phi, dtype=np.float64), params, _global_std(s1, s2, n), self.min_shadows)

    def leave_one_out(self, keep: np.ndarray, stat: np.ndarray) -> np.ndarray:
        x, k = _check_pool(stat, keep, "stat/keep")
        params = leave_one_out_params(k, x)
        s1, s2, n = _side_sums(x, k, None)
        r1, r2, rn = _side_sums(x, k, 1)  # each target's own IN values leave its shadows' array
        sigma = _global_std(s1 - r1, s2 - r2, n - rn)[:, None]
        return _online(x, params, sigma, self.min_shadows)


@dataclass(frozen=True)
class LiRATwoSided:
    """Offline LiRA as the reference code scores it: −log N(φ; μ_out, σ_out²), σ_out per example (ddof 0) or,
    with ``fixed_variance``, the std of all OUT values."""

    fixed_variance: bool = False
    min_shadows: int = 1

    def __call__(self, target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_keep: np.ndarray) -> np.ndarray:
        x, k = _check_pool(shadow_phi, shadow_keep, "shadow_phi/shadow_keep")
        params = lira_params(x, k)
        if self.fixed_variance:
            sigma = _global_std(*_side_sums(x, ~k, None))
        else:
            sigma = _ddof0(params)
        return _two_sided(np.asarray(target_phi, dtype=np.float64), params, sigma, self.min_shadows)

    def leave_one_out(self, keep: np.ndarray, stat: np.ndarray) -> np.ndarray:
        x, k = _check_pool(stat, keep, "stat/keep")
        params = leave_one_out_params(k, x)
        if self.fixed_variance:
            s1, s2, n = _side_sums(x, ~k, None)
            r1, r2, rn = _side_sums(x, ~k, 1)
            sigma = _global_std(s1 - r1, s2 - r2, n - rn)[:, None]
        else:
            sigma = _ddof0(params)
        return _two_sided(x, params, sigma, self.min_shadows)
