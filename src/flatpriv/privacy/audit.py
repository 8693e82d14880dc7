"""Empirical privacy auditing: a lower bound on ε from a membership attack's errors (numpy/scipy only).

**A heuristic as ``flatpriv attack`` applies it.** Clopper–Pearson assumes the trials are independent (one training
run per trial, as in Jagielski et al. 2020). ``flatpriv attack`` feeds it every (model, example) pair of a pool:
the examples of one model are scored by the same trained model and are not independent trials, and no theorem
backs that pooling, so the figure it reports is a heuristic, not a confidence bound. The sound audit on the same
scores is :mod:`flatpriv.privacy.one_run` (Steinke, Nasr, Jagielski 2023), which allows any dependence between
the guesses of one run. What follows holds for independent trials.

If training is (ε, δ)-DP, every membership test, members being the examples trained on, obeys
(Kairouz et al. 2015; used for auditing by Jagielski et al. 2020, "Auditing Differentially Private Machine
Learning: How Private is Private SGD?", and Nasr et al. 2021, "Adversary Instantiation: Lower Bounds for
Differentially Private Machine Learning")

    FPR + e^ε FNR ≥ 1 − δ   and   FNR + e^ε FPR ≥ 1 − δ,

so ε ≥ ln((1 − δ − FNR) / FPR) and ε ≥ ln((1 − δ − FPR) / FNR) at every threshold. With finitely many trials the
true rates are unknown: each is replaced by its one-sided Clopper–Pearson upper confidence bound
FPR_u = Beta⁻¹(c'; FP + 1, n_out − FP) (= 1 when FP = n_out), FNR_u likewise from FN and n_in, at level
c' = 1 − (1 − confidence)/2 each, so that both hold together with probability ≥ ``confidence`` (union bound).
Both ratios decrease in both rates, so

    ε_lower = max over thresholds τ of max(ln((1 − δ − FNR_u)/FPR_u), ln((1 − δ − FPR_u)/FNR_u)), floored at 0,

with each form used only where its numerator is positive. At a threshold fixed in advance (``threshold=``) a
correct (ε, δ)-DP implementation gives ε_lower ≤ ε with probability ≥ ``confidence``. Taking the maximum over
thresholds chosen on the same scores, as Jagielski et al. and Nasr et al. do, makes that guarantee approximate
(a multiple-comparison effect, small next to Clopper–Pearson's conservatism); for a strict audit choose the
threshold on separate trials and pass it in. An ε_lower above the accountant's ε flags a bug (or a broken DP
assumption) with that confidence.

Scores follow "larger = member": the attack says "member" at threshold τ when s ≥ τ. All distinct score values
are candidate thresholds (one sort). For speed with many trials, Beta quantiles are computed exactly for the 2000
counts nearest 0 and nearest n and, in between, at counts on a grid of ratio 1.001 in k and in n − k, each count
rounded *up* to the grid (a larger, still valid, upper bound); the reported figure is recomputed exactly at the
chosen threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import beta

from ..attacks.metrics import clean_scores
from ..errors import FlatprivError

_EXACT = 2000
_RATIO = 1.001


def clopper_pearson_upper(k: np.ndarray | int, n: int, confidence: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a binomial rate after k successes in n trials (1 when k = n)."""
    k = np.asarray(k, dtype=np.float64)
    full = k >= n
    with np.errstate(invalid="ignore"):
        upper = beta.ppf(confidence, k + 1.0, np.where(full, 1.0, n - k))
    return np.where(full, 1.0, upper)


def _upper_on_grid(k: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """clopper_pearson_upper with k rounded up to a grid dense near 0 and n (a larger, valid bound)."""
    if n <= 4 * _EXACT:
        grid = np.arange(n + 1)
    else:
        steps = _EXACT * _RATIO ** np.arange(int(np.log(n / (2 * _EXACT)) / np.log(_RATIO)) + 2)
        low = np.unique(np.ceil(steps[steps < n / 2]).astype(np.int64))
        grid = np.unique(np.r_[np.arange(_EXACT + 1), low, n - low, np.arange(n - _EXACT, n + 1)])
    idx = np.searchsorted(grid, k, side="left")
    used, inverse = np.unique(idx, return_inverse=True)
    return clopper_pearson_upper(grid[used], n, confidence)[inverse].reshape(np.shape(k))


def _eps_forms(fpr_u: np.ndarray, fnr_u: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1.0 - delta - fnr_u > 0, np.log(1.0 - delta - fnr_u) - np.log(fpr_u), -np.inf)
        b = np.where(1.0 - delta - fpr_u > 0, np.log(1.0 - delta - fpr_u) - np.log(fnr_u), -np.inf)
    return a, b


def epsilon_lower_bound(
    scores: np.ndarray,
    members: np.ndarray,
    delta: float = 0.0,
    confidence: float = 0.95,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The Clopper–Pearson ε bound from membership ``scores`` (larger = member) and true ``members`` (bool): a
    confidence bound for independent trials, a heuristic for the (model, example) pairs of a pool (module docstring).

    Returns eps_lower (≥ 0), the threshold achieving it (None when eps_lower = 0), which form achieved it
    ("fpr": ln((1−δ−FNR_u)/FPR_u), "fnr": ln((1−δ−FPR_u)/FNR_u)), the empirical and upper-bounded FPR and FNR
    there, n_members, n_nonmembers, n_dropped_nan (NaN scores are dropped), n_thresholds, confidence and delta.
    With ``threshold`` given only that threshold is evaluated.
    """
    if not 0 < confidence < 1:
        raise FlatprivError(f"confidence must lie in (0, 1), got {confidence}")
    if not 0 <= delta < 1:
        raise FlatprivError(f"delta must lie in [0, 1), got {delta}")
    s, m, n_dropped = clean_scores(scores, members)
    n_in, n_out = int(m.sum()), int((~m).sum())
    if n_in == 0 or n_out == 0:
        raise FlatprivError(f"the audit needs members and non-members with scores, got {n_in} and {n_out}")
    level = 1.0 - (1.0 - confidence) / 2.0

    if threshold is None:
        order = np.argsort(-s, kind="stable")
        s_sorted, m_sorted = s[order], m[order]
        ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
        thresholds = s_sorted[ends]
        tp = np.cumsum(m_sorted)[ends]
        fp = ends + 1 - tp
        a, b = _eps_forms(_upper_on_grid(fp, n_out, level), _upper_on_grid(n_in - tp, n_in, level), delta)
        best = int(np.argmax(np.maximum(a, b)))
        tau, tp_b, fp_b = float(thresholds[best]), int(tp[best]), int(fp[best])
        n_thresholds = int(thresholds.size)
    else:
        tau = float(threshold)
        tp_b, fp_b = int((m & (s >= tau)).sum()), int((~m & (s >= tau)).sum())
        n_thresholds = 1
    fn_b = n_in - tp_b
    fpr_u = float(clopper_pearson_upper(fp_b, n_out, level))
    fnr_u = float(clopper_pearson_upper(fn_b, n_in, level))
    a, b = (float(v) for v in _eps_forms(np.array(fpr_u), np.array(fnr_u), delta))
    eps = max(a, b, 0.0)
    return {
        "eps_lower": eps,
        "threshold": tau if eps > 0 else None,
        "form": ("fpr" if a >= b else "fnr") if eps > 0 else None,
        "fpr": fp_b / n_out,
        "fnr": fn_b / n_in,
        "fpr_upper": fpr_u,
        "fnr_upper": fnr_u,
        "n_members": n_in,
        "n_nonmembers": n_out,
        "n_dropped_nan": n_dropped,
        "n_thresholds": n_thresholds,
        "confidence": confidence,
        "delta": delta,
    }
