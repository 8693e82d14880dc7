"""Attack strength against the number of reference models (``flatpriv attack --references 1,2,4,...``).

For each count R and each pool model t (the target), R references are drawn at random from the other models
(numpy generator seeded with (seed, R, t), so a rerun draws the same subsets, and every attack sees the same ones);
scores are pooled over targets and summarised by AUC and TPR at 1 % and 0.1 % FPR, with the number of scores that
were NaN (an example with no reference on a side that the attack needs) and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.metrics import attack_metrics
from ..errors import FlatprivError
from .attack_scores import PoolSignals

REFERENCE_ATTACKS = (
    "lira_online",
    "lira_online_fixed",
    "lira_online_fixed_refcode",
    "lira_offline_fixed",
    "lira_offline_twosided_fixed",
    "rmia_online",
    "rmia_offline",
)


def parse_references(text: str | None, n_models: int | None = None) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; each count must be >= 1 and (given n_models) at most n_models − 1."""
    if text is None or text == "":
        return []
    try:
        counts = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise FlatprivError(f"--references {text!r}: expected comma-separated integers, e.g. 1,2,4,8") from None
    if counts[0] < 1:
        raise FlatprivError(f"--references {text}: every count must be at least 1")
    if n_models is not None and counts[-1] > n_models - 1:
        raise FlatprivError(
            f"--references {text}: a pool of {n_models} models has at most {n_models - 1} references per target"
        )
    return counts


def reference_curve(
    signals: PoolSignals, counts: list[int], seed: int = 0, progress: Callable[[], Any] | None = None
) -> list[dict[str, Any]]:
    """One row per (count, attack): auc, tpr_at_1%fpr, tpr_at_0.1%fpr, n_dropped_nan, n_members, n_nonmembers.
    ``progress()`` is called after each count."""
    keep = signals.keep
    k = keep.shape[0]
    rows = []
    for count in counts:
        scores = {a: np.empty(keep.shape) for a in REFERENCE_ATTACKS}
        for t in range(k):
            others = np.flatnonzero(np.arange(k) != t)
            refs = np.sort(np.random.default_rng([seed, count, t]).choice(others, size=count, replace=False))
            for a in REFERENCE_ATTACKS:
                scores[a][t] = signals.with_references(a, t, refs)
        for a in REFERENCE_ATTACKS:
            s = scores[a]
            if np.isnan(s).all():
                m: dict[str, Any] = {"auc": None, "tpr_at_1%fpr": None, "tpr_at_0.1%fpr": None}
                m.update(n_dropped_nan=int(s.size), n_members=0, n_nonmembers=0)
            else:
                m = attack_metrics(s.ravel(), keep.ravel(), n_boot=0)
            rows.append(
                {
                    "references": count,
                    "attack": a,
                    "variant": signals.variant(a),
                    **{key: m[key] for key in ("auc", "tpr_at_1%fpr", "tpr_at_0.1%fpr", "n_dropped_nan")},
                    "n_members": m["n_members"],
                    "n_nonmembers": m["n_nonmembers"],
                }
            )
        if progress is not None:
            progress()
    return rows


def plot_references(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """AUC and TPR@1%FPR against the number of references, one line per attack (log2 x axis)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    for j, (key, label) in enumerate((("auc", "AUC"), ("tpr_at_1%fpr", "TPR @ 1 % FPR"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for a in dict.fromkeys(r["attack"] for r in rows):
            pts = [(r["references"], r[key]) for r in rows if r["attack"] == a and r[key] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", ls="--" if a.startswith("lira") else "-", label=a)
        counts = sorted({r["references"] for r in rows})
        ax.set_xscale("log", base=2)
        ax.set(xlabel="reference models per target", ylabel=label, xticks=counts, xticklabels=[str(c) for c in counts])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if j == 1:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    return out
