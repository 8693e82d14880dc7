"""The studies' plots: accuracy against attack success with a Pareto front, per-bucket bars with CIs, sweeps.

Every function writes one PNG and returns its file name (the report embeds it from plots/).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plots import _plt

Point = tuple[str, float, tuple[float, float], float, tuple[float, float], str]  # name, acc, CI, tpr, CI, note


def _save(fig: object, path: Path) -> str:
    fig.tight_layout()  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)  # type: ignore[attr-defined]
    _plt().close(fig)
    return path.name


def accuracy_vs_tpr(points: Sequence[Point], front: Sequence[str], path: Path, title: str) -> str:
    """Test accuracy against TPR@1%FPR, one marker per pool with 95 % CIs; the Pareto front (higher accuracy,
    lower TPR) joined by a line; each label carries its note (a DP point: accountant ε and audit lower bound)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, acc, acc_ci, tpr, tpr_ci, note in points:
        dp = name.startswith("dp")
        ax.errorbar(
            tpr,
            acc,
            xerr=[[tpr - tpr_ci[0]], [tpr_ci[1] - tpr]],
            yerr=[[acc - acc_ci[0]], [acc_ci[1] - acc]],
            fmt="s" if dp else "o",
            ms=5,
            capsize=2,
            color="tab:red" if dp else "tab:blue",
            alpha=0.8,
        )
        ax.annotate(
            f"{name}{' ' + note if note else ''}", (tpr, acc), fontsize=6.5, xytext=(4, 3), textcoords="offset points"
        )
    on_front = sorted([(p[3], p[1]) for p in points if p[0] in front])
    if on_front:
        ax.plot(*zip(*on_front), "--", color="grey", lw=1, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(
        xlabel="LiRA (online, fixed variance) TPR @ 1 % FPR, mean over target models",
        ylabel="test accuracy, mean over models",
        title=title,
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def bucket_bars(rows: list[dict], names: tuple[str, str], path: Path, title: str) -> str:
    """Per influence-entropy bucket: accuracy of both pools, and B − A with its CI (bucket 1 = lowest entropy)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    b = np.arange(1, len(rows) + 1)
    a1.bar(b - 0.2, [r["acc_a"] for r in rows], 0.4, label=names[0])
    a1.bar(b + 0.2, [r["acc_b"] for r in rows], 0.4, label=names[1])
    a1.set(xlabel="influence-entropy bucket (1 = lowest)", ylabel="test accuracy", title=title)
    a1.legend()
    d = np.array([r["diff"] for r in rows])
    err = np.array([[r["diff"] - r["ci_low"] for r in rows], [r["ci_high"] - r["diff"] for r in rows]])
    a2.bar(b, d, yerr=err, capsize=3, color="tab:green")
    a2.axhline(0, color="k", lw=0.8)
    a2.set(xlabel="influence-entropy bucket (1 = lowest)", ylabel=f"{names[1]} − {names[0]} accuracy (95 % CI)")
    return _save(fig, path)


def scatter(x: np.ndarray, y: np.ndarray, labels: tuple[str, str], path: Path, title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ok = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=3, alpha=0.3)
    lo, hi = float(min(x[ok].min(), y[ok].min())), float(max(x[ok].max(), y[ok].max()))
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=0.8)
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    return _save(fig, path)


def lines(
    x: Sequence[float],
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    xticks: Sequence[str] | None = None,
) -> str:
    """One line per series with a CI band: series[name] = (values, low, high) at the points ``x``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (v, lo, hi) in series.items():
        ax.plot(x, v, "o-", label=name)
        ax.fill_between(x, lo, hi, alpha=0.2)
    if xticks is not None:
        ax.set_xticks(list(x), list(xticks))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], path: Path, ylabel: str, title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) * len(series) / 2 + 3), 4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, list(groups), rotation=20, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)
