"""curvature-memorization's plots and the two fits they draw; each plot writes one PNG and returns its name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plots import _plt
from .plots import _save

BIN_WIDTH, BINS = 0.02, 50  # paper 2's binned plot: memorization in [0, 1] in 50 bins of width 0.02


def binned(mem: np.ndarray, curv: np.ndarray) -> dict[str, np.ndarray]:
    """Mean curvature per memorization bin [0.02 b, 0.02 (b + 1)) over points with mem ∈ [0, 1], and the linear
    fit curv ≈ a + b·mem of Thm 5.1 (least squares over the bin means, weighted by their counts)."""
    ok = np.isfinite(mem) & np.isfinite(curv) & (mem >= 0)
    b = np.minimum((mem[ok] / BIN_WIDTH).astype(int), BINS - 1)
    count = np.bincount(b, minlength=BINS)
    total = np.bincount(b, weights=curv[ok], minlength=BINS)
    centre = (np.arange(BINS) + 0.5) * BIN_WIDTH
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    has = count > 0
    slope, intercept = np.polyfit(centre[has], mean[has], 1, w=np.sqrt(count[has])) if has.sum() >= 2 else (np.nan,) * 2
    return {"centre": centre, "mean": mean, "count": count, "slope": np.array(slope), "intercept": np.array(intercept)}


def saturation(eps: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Thm 5.3's shape: (a + b e^{−cε})(1 − e^{−ε})."""
    return (a + b * np.exp(-c * eps)) * (1 - np.exp(-eps))


def fit_saturation(eps: Sequence[float], values: Sequence[float]) -> tuple[float, float, float] | None:
    """Least-squares (a, b, c ≥ 0) of :func:`saturation` through the points; None if there are fewer than 3 or the
    fit does not converge."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    e, v = np.asarray(eps, float), np.asarray(values, float)
    ok = np.isfinite(e) & np.isfinite(v)
    if ok.sum() < 3:
        return None
    top = float(np.max(np.abs(v[ok]))) or 1.0
    try:
        with warnings.catch_warnings():  # 3 points and 3 parameters: no covariance, which is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(
                saturation, e[ok], v[ok], p0=(top, 0.0, 0.1), bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, 1e3])
            )
    except (RuntimeError, ValueError):
        return None
    return float(p[0]), float(p[1]), float(p[2])


def binned_plot(series: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.8), squeeze=False)
    for ax, (name, b) in zip(axes[0], series.items()):
        ax.plot(b["centre"], b["mean"], "o", ms=3)
        x = np.array([0.0, 1.0])
        ax.plot(x, b["intercept"] + b["slope"] * x, "--", color="grey", label=f"fit: slope {float(b['slope']):.3g}")
        ax.set(xlabel="FZ memorization (bins of 0.02)", ylabel="mean curvature in bin", title=name)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def scatter(mem: np.ndarray, curv: dict[str, np.ndarray], path: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(curv), figsize=(4.2 * len(curv), 3.8), squeeze=False)
    for ax, (name, c) in zip(axes[0], curv.items()):
        ok = np.isfinite(mem) & np.isfinite(c)
        ax.scatter(mem[ok], c[ok], s=2, alpha=0.3)
        ax.set(xlabel="FZ memorization", ylabel="curvature", yscale="log", title=name)
    return _save(fig, path)


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str) -> str:
    """ROC curves: name -> (fpr, tpr, auroc)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for name, (fpr, tpr, a) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {a:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (flipped found)", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def epsilon_plot(
    eps: np.ndarray,
    mem: tuple[np.ndarray, np.ndarray, np.ndarray],
    curv: tuple[np.ndarray, np.ndarray, np.ndarray],
    acc: np.ndarray,
    inf: tuple[float, float, float],
    fit: tuple[float, float, float] | None,
    path: Path,
) -> str:
    """Mean memorization with the bound 1 − e^{−ε}, mean curvature with the fitted Thm 5.3 curve, and test accuracy
    against ε (log axis); the non-private pool (ε = ∞) as a dashed line in each panel."""
    plt = _plt()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.9))
    grid = np.geomspace(eps.min() / 1.5, eps.max() * 1.5, 200)
    a1.errorbar(eps, mem[0], yerr=[mem[0] - mem[1], mem[2] - mem[0]], fmt="o-", capsize=3, label="mean FZ mem")
    a1.plot(grid, 1 - np.exp(-grid), "--", color="tab:red", label="bound 1 − e^{−ε}")
    a1.axhline(inf[0], ls=":", color="k", label="non-private")
    a1.set_yscale("symlog", linthresh=1e-3)
    a1.set(xscale="log", xlabel="ε", ylabel="mean memorization", title="memorization vs ε")
    a2.errorbar(eps, curv[0], yerr=[curv[0] - curv[1], curv[2] - curv[0]], fmt="o-", capsize=3, label="mean curvature")
    if fit is not None:
        a2.plot(grid, saturation(grid, *fit), "--", color="tab:green", label="fit (a + b e^{−cε})(1 − e^{−ε})")
    a2.axhline(inf[1], ls=":", color="k", label="non-private")
    a2.set(xscale="log", xlabel="ε", ylabel="mean curvature ('norm')", title="curvature vs ε")
    a3.plot(eps, acc, "o-")
    a3.axhline(inf[2], ls=":", color="k", label="non-private")
    a3.set(xscale="log", xlabel="ε", ylabel="test accuracy (mean over models)", title="accuracy vs ε")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)
