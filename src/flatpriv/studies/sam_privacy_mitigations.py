"""sam-privacy's mitigation sections (R2d, R2e): every pool on the accuracy vs TPR@1%FPR plane with its Pareto
front, and the DP pools against every attack with the audit's bound next to the accountant's ε."""

from __future__ import annotations

import numpy as np

from . import measures as M
from . import plots
from .claims import Measurement, ci, mean_ci, paired, unpaired
from .report import Section, fmt
from .runner import Context


def tradeoff_section(ctx: Context, m: dict[str, dict[str, np.ndarray]], parts: dict[str, list[Measurement]]) -> Section:
    s, main = ctx.settings, M.MAIN_ATTACK
    base = "mnist1d" if "mnist1d" in s["datasets"] else s["datasets"][0]
    sgd = m[f"{base}-sgd"]
    points = []
    for name, x in m.items():
        if not (name.startswith(base + "-") or name.startswith("dp-")):
            continue
        acc, acc_ci = ci(x["model_test_acc"], s)
        tpr, tpr_ci = ci(x[f"{main}.tpr"], s)
        note = ""
        if name.startswith("dp-"):
            eps = ctx.done[name]["summary"]["epsilon"]
            note = f"(ε={eps:.2g}, lower bound {float(x[f'{main}.eps_lower']):.2g})"
        points.append((name.removeprefix(base + "-"), acc, acc_ci, tpr, tpr_ci, note))
    front = M.pareto([(p[0], p[1], p[3]) for p in points])
    sec = Section("R2d: accuracy against privacy, all mitigations")
    sec.plot(
        plots.accuracy_vs_tpr(
            points,
            front,
            ctx.plots / "accuracy_vs_tpr.png",
            f"{base} pools and DP pools ({s['dp_samples']} MNIST-1D examples)",
        ),
        "Test accuracy against LiRA TPR@1%FPR (95 % CIs over models); Pareto front dashed",
    )
    sec.table(
        ["pool", "test acc", "95 % CI", "TPR@1%FPR", "95 % CI", "note", "Pareto-optimal"],
        [
            [
                p[0],
                fmt(p[1]),
                f"[{fmt(p[2][0])}, {fmt(p[2][1])}]",
                fmt(p[3]),
                f"[{fmt(p[4][0])}, {fmt(p[4][1])}]",
                p[5],
                "yes" if p[0] in front else "",
            ]
            for p in points
        ],
    )
    sec.text(
        f"Pareto-optimal: {', '.join(front)}. DP pools are trained on {s['dp_samples']} MNIST-1D examples "
        f"(the others on {s['mnist1d_samples']}), so their differences from SGD are unpaired."
    )
    parts["R2d"].append(
        paired(
            sgd[f"{main}.tpr"],
            m[f"{base}-sharpreg"][f"{main}.tpr"],
            "pool models",
            s,
            relation="<",
            label="SharpReg − SGD TPR",
        )
    )
    for name in [n for n in m if n.startswith("dp-")]:
        parts["R2d"].append(
            unpaired(
                sgd[f"{main}.tpr"], m[name][f"{main}.tpr"], "pool models", s, relation="<", label=f"{name} − SGD TPR"
            )
        )
    return sec


def dp_section(ctx: Context, m: dict[str, dict[str, np.ndarray]], parts: dict[str, list[Measurement]]) -> Section:
    s = ctx.settings
    sec = Section("R2e: DP pools against every attack")
    sec.text(
        "AUC is the mean over target models (CI over models). The ε lower bound is the Clopper–Pearson audit "
        "over all (model, example) pairs of the pool, a heuristic: trials within one model are not independent."
    )
    rows = []
    for name in [n for n in m if n.startswith("dp-")]:
        x, summ = m[name], ctx.done[name]["summary"]
        eps = float(summ["epsilon"])
        for attack in M.ATTACKS:
            value, lo, hi = mean_ci(x[f"{attack}.auc"], s["resamples"], s["seed"])
            low_bound = float(x[f"{attack}.eps_lower"])
            rows.append(
                [
                    name,
                    attack,
                    fmt(value),
                    f"[{fmt(lo)}, {fmt(hi)}]",
                    fmt(low_bound),
                    fmt(eps),
                    fmt(float(x["model_test_acc"].mean())),
                ]
            )
            if eps <= 1.0 + 1e-9:
                parts["R2e"].append(
                    Measurement(
                        value,
                        lo,
                        hi,
                        len(x[f"{attack}.auc"]),
                        "pool models",
                        relation="within",
                        threshold=(0.45, 0.55),
                        label=f"{name} {attack} AUC",
                    )
                )
            parts["R2e"].append(
                Measurement(
                    low_bound,
                    low_bound,
                    low_bound,
                    1,
                    "audit bound (heuristic)",
                    relation="<=",
                    threshold=eps,
                    label=f"{name} {attack} ε_lower ≤ {eps:.3g}",
                )
            )
    sec.table(
        ["pool", "attack", "AUC", "95 % CI", "ε lower bound", "accountant ε (PLD, add/remove-one)", "test acc"], rows
    )
    return sec
