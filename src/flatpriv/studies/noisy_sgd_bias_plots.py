"""The noisy-sgd-bias study's plots; each writes one PNG under plots/ and returns its file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plots import _plt
from .plots import _save


def distance_curves(steps: np.ndarray, dist: np.ndarray, methods: Sequence[str], path: Path, title: str) -> str:
    """‖β_t − β*‖² against t, log scale: the mean over seeds and a 10–90 % band (dist [S, M, R])."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = np.maximum(steps, 1)
    for m, name in enumerate(methods):
        ax.plot(x, dist[:, m].mean(0), label=name, lw=1.4)
        lo, hi = np.percentile(dist[:, m], [10, 90], axis=0)
        ax.fill_between(x, lo, hi, alpha=0.15)
    ax.set(xscale="log", yscale="log", xlabel="iteration t", ylabel="‖β_t − β*‖²", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def final_distances(final: dict[str, np.ndarray], methods: Sequence[str], path: Path, title: str) -> str:
    """Final ‖β − β*‖² per method, one column of points per α (a line joins each seed's points across methods)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(final), figsize=(5.2 * len(final), 4), squeeze=False)
    for ax, (alpha, d) in zip(axes[0], final.items()):
        x = np.arange(d.shape[1])
        for row in d:
            ax.plot(x, row, "-", color="grey", alpha=0.25, lw=0.7)
        ax.plot(x, np.median(d, 0), "o-", color="tab:red", label="median over seeds")
        ax.set_xticks(x, list(methods), rotation=30, fontsize=7, ha="right")
        ax.set(yscale="log", ylabel="final ‖β − β*‖²", title=f"{title}, α = {alpha}")
        ax.legend(fontsize=7)
    return _save(fig, path)


def alpha_inf(sigmas: Sequence[float], values: dict[str, np.ndarray], path: Path) -> str:
    """The effective initialisation α∞ (geometric mean over coordinates, mean over seeds) against σ, per α."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for alpha, v in values.items():
        ax.plot(sigmas, v / float(alpha), "o-", label=f"α = {alpha}")
    ax.set(xlabel="σ (0: SGD)", ylabel="α∞ / α", title="effective initialisation shrinks with σ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def covariance_diag(rows: list[dict], path: Path) -> str:
    """The stationary variances (diagonal of M) per σ: simulated, exact discrete Lyapunov, first order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, r in enumerate(rows):
        d = np.arange(len(r["exact_diag"])) + 0.12 * k
        ax.plot(d, r["exact_diag"], "_", ms=14, color=f"C{k}", label=f"σ = {r['sigma']:g}: exact")
        ax.plot(d, r["sim_diag"], "o", ms=4, color=f"C{k}", label=f"σ = {r['sigma']:g}: simulated")
        ax.plot(d, r["first_order_diag"], "x", ms=5, color=f"C{k}")
    ax.set(xlabel="coordinate j", ylabel="stationary Var(θ_j)", yscale="log", title="least squares, (Noisy-)SGD")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def bound_curve(steps: np.ndarray, gap: np.ndarray, b_noisy: np.ndarray, b_sgd: np.ndarray, path: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(steps, gap, label="E‖θ_t − β_t‖² (mean over chains)")
    ax.plot(steps, b_noisy, "--", label="γdσ² ∫ L(θ_s) ds (noisy run)")
    ax.plot(steps, b_sgd, ":", label="γdσ² ∫ L(β_s) ds (SGD run)")
    ax.set(xlabel="step t", ylabel="squared distance", title="over-parameterised: noisy vs SGD solution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def accuracy_vs_batch(
    bs: Sequence[int],
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    notes: dict[str, list[str]],
    path: Path,
) -> str:
    """Test accuracy against B (log₂ axis) with CIs over seeds; ``notes`` label each point (e.g. DP-SGD's ε)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    for name, (v, lo, hi) in series.items():
        ax.errorbar(bs, v, yerr=[v - lo, hi - v], fmt="o-", capsize=3, label=name)
        for b, y, note in zip(bs, v, notes.get(name, [])):
            ax.annotate(note, (b, y), fontsize=6.5, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.margins(x=0.1)  # room for the last point's label
    ax.set_xticks(list(bs), [str(b) for b in bs])
    ax.set(xlabel="batch size B (σ/B and steps fixed)", ylabel="test accuracy (mean over seeds, 95 % CI)")
    ax.set_title("MNIST-1D: accuracy against batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
