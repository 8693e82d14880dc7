"""The vasso-label-noise study's own plot: the perturbation direction's variance per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plots import _plt
from .plots import _save


def direction_curves(runs: dict[str, Any], path: Path, title: str) -> str:
    """tr Cov of the unit direction per epoch: SAM's g_t, and for each VaSSO run its d_t (solid) and g_t (dotted)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt, run in runs.items():
        ser, epochs = run["series"], run["epochs"]
        if "d" in ser:
            (line,) = ax.plot(epochs, ser["d"]["unit_variance"], "-", label=f"{opt}: d_t")
            ax.plot(epochs, ser["g"]["unit_variance"], ":", color=line.get_color(), label=f"{opt}: g_t")
        else:
            ax.plot(epochs, ser["g"]["unit_variance"], "-", color="k", label=f"{opt}: g_t")
    ax.set(xlabel="epoch", ylabel="tr Cov of the unit direction", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
