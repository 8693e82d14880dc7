"""How well membership scores separate members from non-members (numpy + scikit-learn, never torch).

Scores follow the convention "larger = member": at threshold τ the attack says "member" when s ≥ τ, so
TPR(τ) = P[s ≥ τ | member], FPR(τ) = P[s ≥ τ | non-member], FNR = 1 − TPR. Following Carlini et al. 2022
("Membership Inference Attacks From First Principles"):

- ROC curve (sklearn.metrics.roc_curve, every distinct threshold kept) and AUC (roc_auc_score, or
  sklearn.metrics.auc on that curve, the same number);
- balanced accuracy max_τ 1 − (FPR + FNR)/2 = max_τ (1 + TPR − FPR)/2;
- TPR at low FPR: TPR@α = tpr[where(fpr < α)[-1]] (0 when no threshold has FPR < α), at α = 0.1 % and 1 %.
  TPR@0.1%FPR only means something with ≥ ~1000 non-member scores, so :func:`attack_metrics` reports how many
  members and non-members every figure rests on (and 1/n_nonmembers, the smallest FPR the data resolve).

Confidence intervals are stratified percentile bootstraps (members and non-members resampled separately, so both
counts stay fixed). Scores are sorted once; a resample is a vector of multiplicities, and its ROC curve is the
cumulative sum of those multiplicities in score order, evaluated at the ends of runs of tied scores, which is
exactly the curve roc_curve would compute on the resampled data, at O(n) cost per replicate (about 0.1 s per
million scores on one busy core: 200 replicates on a 256 × 10 000 pool take ~50 s; pass a smaller n_boot to trade).

NaN scores (e.g. LiRA on an example with too few shadows) are dropped and counted; ±inf become ±float max.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import auc as sklearn_auc
from sklearn.metrics import roc_auc_score, roc_curve

from ..errors import FlatprivError

FPR_TARGETS = {"tpr_at_0.1%fpr": 1e-3, "tpr_at_1%fpr": 1e-2}


class RocCurve(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_members: int
    n_nonmembers: int
    n_dropped_nan: int


def clean_scores(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Flattened float64 scores and bool members without NaN scores, and how many were dropped."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(members).ravel()
    if s.shape != m.shape:
        raise FlatprivError(f"scores ({s.size}) and members ({m.size}) must have the same number of entries")
    if m.dtype != bool:
        if not np.all((m == 0) | (m == 1)):
            raise FlatprivError("members must be boolean (or 0/1)")
        m = m.astype(bool)
    keep = ~np.isnan(s)
    s, m = s[keep], m[keep]
    big = np.finfo(np.float64).max
    s = np.clip(s, -big, big)
    if not m.any() or m.all():
        raise FlatprivError(
            f"need both members and non-members with non-NaN scores, got {int(m.sum())} and {int((~m).sum())}"
        )
    return s, m, int((~keep).sum())


def roc(scores: np.ndarray, members: np.ndarray) -> RocCurve:
    """The ROC curve (all distinct thresholds, starting at (0, 0) with threshold inf) and the counts behind it."""
    s, m, dropped = clean_scores(scores, members)
    fpr, tpr, thresholds = roc_curve(m, s, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds, int(m.sum()), int((~m).sum()), dropped)


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """Area under the ROC curve (NaN scores dropped)."""
    s, m, _ = clean_scores(scores, members)
    return float(roc_auc_score(m, s))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """tpr[where(fpr < target)[-1]]: the TPR of the last ROC point with FPR strictly below target (0 if none)."""
    fpr = np.asarray(fpr)
    below = np.flatnonzero(fpr < target)
    return float(np.asarray(tpr)[below[-1]]) if below.size else 0.0


def balanced_accuracy(scores: np.ndarray, members: np.ndarray) -> float:
    """max over thresholds of 1 − (FPR + FNR)/2."""
    curve = roc(scores, members)
    return float(np.max(1.0 - (curve.fpr + 1.0 - curve.tpr) / 2.0))


def _curve_metrics(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """[auc, balanced accuracy, TPR at each FPR target] of a curve that starts at (0, 0) and ends at (1, 1)."""
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    bal = float(np.max(1.0 - (fpr + 1.0 - tpr) / 2.0))
    return np.array([area, bal, *(tpr_at_fpr(fpr, tpr, a) for a in FPR_TARGETS.values())])


class _SortedScores:
    """Scores sorted once (descending) so that the ROC curve of any reweighting is two cumulative sums."""

    def __init__(self, s: np.ndarray, m: np.ndarray) -> None:
        order = np.argsort(-s, kind="stable")
        s_sorted, m_sorted = s[order], m[order]
        ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
        # Members / non-members scored at or above each distinct threshold, counted in sorted order.
        self.k_members = np.cumsum(m_sorted)[ends]
        self.k_nonmembers = ends + 1 - self.k_members

    def curve(self, w_members: np.ndarray, w_nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) when the i-th member (non-member) in sorted order counts w_members[i] (w_nonmembers[i])."""
        c_m = np.r_[0, np.cumsum(w_members)]
        c_n = np.r_[0, np.cumsum(w_nonmembers)]
        return np.r_[0.0, c_n[self.k_nonmembers] / c_n[-1]], np.r_[0.0, c_m[self.k_members] / c_m[-1]]


def attack_metrics(
    scores: np.ndarray, members: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """AUC, balanced accuracy, TPR@0.1%FPR and TPR@1%FPR, each with a ``level`` bootstrap CI (key ``<name>_ci``,
    [low, high], None when n_boot = 0), plus n_members, n_nonmembers, n_dropped_nan and min_fpr_resolvable."""
    if n_boot < 0 or not 0 < level < 1:
        raise FlatprivError(f"need n_boot >= 0 and 0 < level < 1, got n_boot={n_boot}, level={level}")
    s, m, dropped = clean_scores(scores, members)
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    names = ["auc", "balanced_accuracy", *FPR_TARGETS]
    point = _curve_metrics(fpr, tpr)
    point[0] = sklearn_auc(fpr, tpr)  # = roc_auc_score(m, s), without sorting the scores again
    n_m, n_n = int(m.sum()), int((~m).sum())
    out: dict[str, Any] = {}
    cis: list[Any] = [None] * len(names)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        srt = _SortedScores(s, m)
        boot = np.empty((n_boot, len(names)))
        for b in range(n_boot):
            w_m = np.bincount(rng.integers(0, n_m, n_m), minlength=n_m)
            w_n = np.bincount(rng.integers(0, n_n, n_n), minlength=n_n)
            boot[b] = _curve_metrics(*srt.curve(w_m, w_n))
        q = 100.0 * (1.0 - level) / 2.0
        cis = np.percentile(boot, [q, 100.0 - q], axis=0).T.tolist()
    for name, value, ci in zip(names, point, cis):
        out[name] = float(value)
        out[f"{name}_ci"] = ci
    out.update(
        n_members=n_m,
        n_nonmembers=n_n,
        n_dropped_nan=dropped,
        min_fpr_resolvable=1.0 / n_n,
        n_boot=int(n_boot),
        ci_level=level,
    )
    return out


def _step_points(fpr: np.ndarray, tpr: np.ndarray, lo: float, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2n points of the (step) ROC curve on a log grid of FPRs, for plotting long curves."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.size <= 2 * n:
        return fpr, tpr
    grid = np.unique(np.r_[np.geomspace(lo, 1.0, n), np.linspace(0.0, 1.0, n)])
    idx = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1)
    return fpr[idx], tpr[idx]


def plot_roc(curves: Mapping[str, Sequence[np.ndarray] | RocCurve], path: str | Path, title: str | None = None) -> Path:
    """Log-log ROC plot of named (fpr, tpr) curves (or :class:`RocCurve`) with the chance diagonal; the legend
    gives each curve's AUC and TPR@1%FPR. The FPR axis starts at 1e-4, or at 1/n where the curves resolve less."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise FlatprivError("plot_roc needs at least one curve")
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fprs = [np.asarray(c[0], dtype=np.float64) for c in curves.values()]
    positive = [f[f > 0].min() for f in fprs if np.any(f > 0)]
    lo = max(min(positive, default=1e-4), 1e-4)
    for name, curve in curves.items():
        fpr, tpr = np.asarray(curve[0], dtype=np.float64), np.asarray(curve[1], dtype=np.float64)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
        f, t = _step_points(fpr, tpr, lo)
        ax.plot(f, t, drawstyle="steps-post", label=f"{name} (AUC {area:.3f}, TPR@1% {tpr_at_fpr(fpr, tpr, 0.01):.1%})")
    ax.plot([lo, 1.0], [lo, 1.0], ls="--", color="grey", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, 1.0),
        ylim=(lo, 1.0),
        xlabel="False positive rate",
        ylabel="True positive rate",
        title=title or "ROC",
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    return out
