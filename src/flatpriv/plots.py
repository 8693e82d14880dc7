"""Plots written next to results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    from .data.datasets import quiet_matplotlib_cache

    quiet_matplotlib_cache()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram(
    values: dict[str, np.ndarray],
    path: Path,
    xlabel: str,
    title: str,
    bins: int = 40,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """Overlaid histograms of one per-example score (NaN dropped), one colour per source."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in values.items():
        v = np.asarray(v, dtype=float)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=bins, range=value_range, alpha=0.55, label=f"{name} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
