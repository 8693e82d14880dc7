"""The one-run privacy audit of Steinke, Nasr and Jagielski (NeurIPS 2023, "Privacy Auditing with One (1) Training
Run", arXiv:2305.08846), on membership scores (numpy/scipy only, never torch).

Setting. m canaries, each included in the training set independently with probability ½ (S ∈ {−1, +1}^m
uniform); every other example is fixed. The auditor sees the trained model (here: a score per canary, larger =
IN) and guesses IN for the k₊ highest scores, OUT for the k₋ lowest, and abstains on the rest: r = k₊ + k₋
guesses, v of them correct.

Theorem (their Theorem 3.1, with the p-value their appendix algorithm computes from it). If training is (ε, δ)-DP
with respect to each canary's inclusion, then for every v, with W ~ Binomial(r, q), q = e^ε / (1 + e^ε),

    P[v or more correct] ≤ P[W ≥ v] + 2 m δ · max_{i = 1, …, v} P[v > W ≥ v − i] / i.

For δ = 0 the p-value is the binomial tail alone, P[W ≥ v] = I_q(v, r − v + 1) (regularized incomplete beta).
The max runs over i ≤ v only: for larger i the numerator stops growing (W ≥ 0) and 1/i shrinks.

ε lower bound. The audit reports the largest ε whose p-value stays below α = 0.05: for δ = 0 that is
logit(q*) with q* = Beta⁻¹(α; v, r − v + 1), exactly (the tail is increasing in q). For δ > 0 the p-value need not
be monotone in ε, so it is evaluated on a grid of ε (step 0.01) and the bound is the last grid point before the
first one whose p-value reaches α; that keeps the guarantee (if training is (ε₀, δ)-DP it is (g, δ)-DP at the
first grid point g ≥ ε₀, whose test rejects with probability ≤ α) at the price of rounding down to the grid.
Choosing (k₊, k₋) after seeing the scores is paid for by Bonferroni: every pair of the grid is tested at
α / |grid| and the largest bound is reported.

Ceiling. Even with every guess correct (v = r) the bound cannot exceed logit((α/|grid|)^{1/r}) for δ = 0
(≈ 5.8 for r = 1000 at α = 0.05 without a grid); it is reported beside every bound, which is only informative
when well below it.

This test is valid for a single training run. A pool of K independent runs is one mechanism on K·m canaries
(changing one inclusion bit changes one model's training set, so the pool is (ε, δ)-DP in each bit); the theorem
then applies to guesses that depend on the pool's outputs but on no inclusion bit of the audited models. A
leave-one-out attack breaks that (target k's guesses read the other models' keep masks), so the pooled audit in
:mod:`flatpriv.analyses.attack` splits the pool: the first half are audited, scored against references from the
second half only.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy.special import expit, logit
from scipy.stats import beta, binom

from ..errors import FlatprivError

ALPHA = 0.05
EPS_STEP = 0.01
_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _check(r: int, v: int, delta: float, m: int | None) -> int:
    if not 0 <= v <= r:
        raise FlatprivError(f"need 0 <= v <= r, got v={v}, r={r}")
    if not 0 <= delta <= 1:
        raise FlatprivError(f"delta must lie in [0, 1], got {delta}")
    if delta > 0 and (m is None or m < r):
        raise FlatprivError(f"delta > 0 needs the number of canaries m >= r = {r}, got {m}")
    return int(m or r)


def _delta_term(r: int, v: int, q: np.ndarray) -> np.ndarray:
    """max_{i=1..v} P[v > W ≥ v − i] / i for W ~ Binomial(r, q), one value per q.

    Only j = v − i ≥ lo enters exactly, lo = the 1e-18 quantile of W at the smallest q: beyond it the numerator
    grows by less than 1e-18 while 1/i shrinks, and 1e-18 is added to the result so it never drops below the max.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if v == 0:
        return np.zeros_like(q)
    lo = int(min(max(binom.ppf(1e-18, r, q.min()) - 1, 0), v - 1))
    j = np.arange(v - 1, lo - 1, -1)  # v−1, v−2, …, lo
    mass = np.cumsum(binom.pmf(j[None, :], r, q[:, None]), axis=1)  # column i−1: P[v−i ≤ W ≤ v−1]
    return (mass / np.arange(1, j.size + 1)[None, :]).max(axis=1) + (1e-18 if lo > 0 else 0.0)


def p_value(r: int, v: int, eps: float | np.ndarray, delta: float = 0.0, m: int | None = None) -> np.ndarray:
    """The theorem's bound on P[≥ v correct of r guesses] under (ε, δ)-DP with m canaries (capped at 1)."""
    m = _check(r, v, delta, m)
    q = expit(np.asarray(eps, dtype=np.float64))
    p = binom.sf(v - 1, r, q)
    if delta > 0:
        p = p + 2.0 * m * delta * _delta_term(r, v, q).reshape(np.shape(q))
    return np.minimum(p, 1.0)


def epsilon_lower(r: int, v: int, alpha: float = ALPHA, delta: float = 0.0, m: int | None = None) -> float:
    """The largest ε (≥ 0) whose p-value stays below ``alpha`` (exact for δ = 0, on a 0.01 grid for δ > 0)."""
    m = _check(r, v, delta, m)
    if not 0 < alpha < 1:
        raise FlatprivError(f"alpha must lie in (0, 1), got {alpha}")
    if v == 0:
        return 0.0
    eps0 = max(float(logit(beta.ppf(alpha, v, r - v + 1))), 0.0)
    if delta == 0 or eps0 == 0:
        return eps0
    grid = np.arange(0.0, eps0 + EPS_STEP, EPS_STEP)  # p_δ ≥ p_0, so the first crossing is at or below eps0
    for start in range(0, grid.size, 32):  # in chunks, stopping at the first grid point that fails
        fails = np.flatnonzero(p_value(r, v, grid[start : start + 32], delta, m) >= alpha)
        if fails.size:
            first = start + int(fails[0])
            return float(grid[first - 1]) if first > 0 else 0.0
    return float(grid[-1])


@functools.lru_cache(maxsize=256)
def ceiling(r: int, alpha: float = ALPHA, delta: float = 0.0, m: int | None = None) -> float:
    """The bound when all r guesses are correct: the most r guesses can show (cached: slow for δ > 0, large r)."""
    return epsilon_lower(r, r, alpha, delta, m) if r > 0 else 0.0


def count_correct(scores: np.ndarray, members: np.ndarray, k_plus: int, k_minus: int) -> tuple[int, int]:
    """(r, v): guess IN on the k₊ highest scores, OUT on the k₋ lowest (ties broken by position), abstain on NaN
    scores and on the rest."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(members).astype(bool).ravel()
    ok = ~np.isnan(s)
    s, m = s[ok], m[ok]
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > s.size:
        raise FlatprivError(f"k+ = {k_plus} and k- = {k_minus} guesses need k+ + k- <= {s.size} scores")
    order = np.argsort(s, kind="stable")
    v = int(m[order[s.size - k_plus :]].sum()) if k_plus else 0
    v += int((~m[order[:k_minus]]).sum())
    return k_plus + k_minus, v


def guess_grid(n: int) -> list[tuple[int, int]]:
    """(k₊, k₋) pairs tried: k₊ ∈ {⌈f n⌉}, k₋ ∈ {0} ∪ {⌈f n⌉} for f in 0.1 %, 0.2 %, 0.5 %, …, 50 %, k₊ + k₋ ≤ n."""
    ks = sorted({max(int(np.ceil(f * n)), 1) for f in _FRACTIONS})
    return [(kp, km) for kp in ks for km in [0, *ks] if kp + km <= n]


def one_run_audit(
    scores: np.ndarray,
    members: np.ndarray,
    delta: float = 0.0,
    alpha: float = ALPHA,
    grid: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The audit on one set of canaries: the best (k₊, k₋) of the grid at α / |grid| (Bonferroni).

    ``scores`` (larger = IN) and ``members`` (the inclusion bits) are flat arrays over the m canaries; NaN scores
    are abstentions. Returns eps_lower, the (k₊, k₋), r and v that gave it, the ceiling of the grid (its largest r,
    all correct), m, the grid size, α and δ."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    mem = np.asarray(members).ravel()
    if s.shape != mem.shape or s.size == 0:
        raise FlatprivError(f"scores ({s.size}) and members ({mem.size}) must be non-empty and of equal size")
    m = s.size
    n = int((~np.isnan(s)).sum())
    pairs = grid if grid is not None else guess_grid(n)
    if not pairs:
        raise FlatprivError("the one-run audit needs at least one non-NaN score")
    level = alpha / len(pairs)
    ok = ~np.isnan(s)
    m_sorted = mem.astype(bool)[ok][np.argsort(s[ok], kind="stable")]  # ascending score; ties by position
    top = np.r_[0, np.cumsum(m_sorted[::-1])]  # members among the k highest
    bottom = np.r_[0, np.cumsum(~m_sorted)]  # non-members among the k lowest
    kp_all, km_all = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if (kp_all < 0).any() or (km_all < 0).any() or (kp_all + km_all > n).any():
        raise FlatprivError(f"every (k+, k-) needs k+, k- >= 0 and k+ + k- <= {n} scores")
    r_all, v_all = kp_all + km_all, top[kp_all] + bottom[km_all]
    with np.errstate(divide="ignore"):  # the exact δ = 0 bound, vectorised over the grid
        eps_all = np.where(v_all > 0, logit(beta.ppf(level, np.maximum(v_all, 1), r_all - v_all + 1)), 0.0)
    eps_all = np.maximum(eps_all, 0.0)
    if delta > 0:  # each δ > 0 bound is at most its δ = 0 bound: evaluate in that order, stop when none can win
        upper, eps_all = eps_all, np.zeros_like(eps_all)
        for j in np.argsort(-upper, kind="stable"):
            if upper[j] <= eps_all.max():
                break
            eps_all[j] = epsilon_lower(int(r_all[j]), int(v_all[j]), level, delta, m)
    b = int(np.argmax(eps_all))
    best = {"eps_lower": float(eps_all[b]), "k_plus": int(kp_all[b]), "k_minus": int(km_all[b])}
    best.update(r=int(r_all[b]), v=int(v_all[b]))
    r_max = int(r_all.max())
    return {
        **best,
        "ceiling": ceiling(r_max, level, delta, m),
        "m": m,
        "n_scored": n,
        "n_pairs": len(pairs),
        "alpha": alpha,
        "delta": delta,
    }
