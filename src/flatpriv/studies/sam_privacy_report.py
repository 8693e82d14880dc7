"""sam-privacy's claims, plots and report sections from the measured arrays (see :mod:`.sam_privacy_analysis`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import plots as base_plots
from ..attacks.metrics import plot_roc
from ..memorization import bucket_comparison, entropy_buckets
from . import measures as M
from . import plots
from .claims import Measurement, Result, ci, paired
from .report import Section, fmt
from .runner import Context
from .sam_privacy import CLAIMS
from .sam_privacy_mitigations import dp_section, tradeoff_section

CONFOUND_GAP = 0.01  # a pool whose train accuracy is this far below SGD's: its attack gap is confounded


def build(
    ctx: Context, m: dict[str, dict[str, np.ndarray]], bucket_diff: Callable
) -> tuple[list[Result], list[Section]]:
    s, main = ctx.settings, M.MAIN_ATTACK
    claims = {c.id: c for c in CLAIMS}
    parts: dict[str, list[Measurement]] = {c.id: [] for c in CLAIMS}
    sections: list[Section] = []
    sam_name = f"sam-{s['rho']:g}"
    for ds in s["datasets"]:
        sgd, sam = m[f"{ds}-sgd"], m[f"{ds}-{sam_name}"]
        lab = dict(label=ds)
        parts["R1a"].append(paired(sgd["test_acc_pt"], sam["test_acc_pt"], "test points", s, **lab))
        v, lo, hi, n = bucket_diff(
            sgd["entropy"], sgd["test_acc_pt"], sam["test_acc_pt"], s["buckets"], s["resamples"], s["seed"]
        )
        parts["R1b"].append(Measurement(v, lo, hi, n, "test points (buckets 1 and 5)", **lab))
        mid = [((x["mem"] >= 0.3) & (x["mem"] <= 0.9)).astype(float) for x in (sgd, sam)]
        parts["R1c"].append(paired(mid[0], mid[1], "training points", s, **lab))
        parts["R2a"].append(paired(sgd[f"{main}.tpr"], sam[f"{main}.tpr"], "pool models", s, **lab))
        parts["R2b"].append(paired(sgd[f"{main}.auc"], sam[f"{main}.auc"], "pool models", s, **lab))
        parts["R2c"].append(paired(sgd["out_phi_var"], sam["out_phi_var"], "training points", s, relation="<", **lab))
        sections += _dataset_sections(ctx, ds, m, sam_name)
    sections.append(tradeoff_section(ctx, m, parts))
    sections.append(dp_section(ctx, m, parts))
    results = [Result(claims[c], parts[c]) for c in claims]
    return results, sections


def _pool_table(ds: str, m: dict[str, dict[str, np.ndarray]], s: dict[str, Any]) -> tuple[list[str], list[list]]:
    header = [
        "pool",
        "train acc",
        "test acc",
        "mem mean",
        "mid-range mem",
        *[f"{a} AUC / TPR@1%" for a in M.ATTACKS],
        "confound",
    ]
    rows = []
    sgd_train = float(m[f"{ds}-sgd"]["train_acc"])
    for name in [n for n in m if n.startswith(ds + "-")]:
        x = m[name]
        gap = sgd_train - float(x["train_acc"])
        rows.append(
            [
                name,
                fmt(float(x["train_acc"])),
                fmt(float(x["model_test_acc"].mean())),
                fmt(float(np.nanmean(x["mem"]))),
                fmt(float(np.nanmean((x["mem"] >= 0.3) & (x["mem"] <= 0.9)))),
                *[f"{fmt(float(x[f'{a}.pooled_auc']))} / {fmt(float(x[f'{a}.pooled_tpr']))}" for a in M.ATTACKS],
                f"train acc {gap:.1%} below SGD" if gap > CONFOUND_GAP else "",
            ]
        )
    return header, rows


def _dataset_sections(ctx: Context, ds: str, m: dict[str, dict[str, np.ndarray]], sam_name: str) -> list[Section]:
    return [_r1_section(ctx, ds, m, sam_name), _r2_section(ctx, ds, m, sam_name)]


def _r1_section(ctx: Context, ds: str, m: dict[str, dict[str, np.ndarray]], sam_name: str) -> Section:
    """Accuracy per influence-entropy bucket, memorization distributions, and the planted rare sub-populations."""
    s, out = ctx.settings, ctx.plots
    sgd, sam = m[f"{ds}-sgd"], m[f"{ds}-{sam_name}"]
    r1 = Section(f"R1 on {ds}: accuracy, entropy buckets, memorization")
    buckets = entropy_buckets(sgd["entropy"], s["buckets"])
    rows = bucket_comparison(buckets, sgd["test_acc_pt"], sam["test_acc_pt"], n_boot=s["resamples"], seed=s["seed"])
    r1.text(
        f"Test points in {s['buckets']} equal-count buckets of the SGD pool's influence entropy (bucket 1 = "
        f"lowest: points that rely on few training points). Accuracy is the mean over each pool's models."
    )
    r1.table(
        ["bucket", "n", "SGD acc", f"SAM ρ={s['rho']:g} acc", "SAM − SGD", "95 % CI"],
        [
            [
                r["bucket"] + 1,
                r["n"],
                fmt(r["acc_a"]),
                fmt(r["acc_b"]),
                fmt(r["diff"]),
                f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
            ]
            for r in rows
        ],
    )
    r1.plot(
        plots.bucket_bars(rows, ("SGD", f"SAM ρ={s['rho']:g}"), out / f"buckets_{ds}.png", ds),
        f"{ds}: per-bucket accuracy and SAM − SGD (bootstrap 95 % CI over test points)",
    )
    base_plots.histogram(
        {"SGD": sgd["mem"], f"SAM ρ={s['rho']:g}": sam["mem"]},
        out / f"mem_hist_{ds}.png",
        "Feldman–Zhang memorization",
        f"{ds}: memorization of training points",
        value_range=(-1, 1),
    )
    r1.plot(f"mem_hist_{ds}.png", f"{ds}: memorization distributions, SGD and SAM (log counts)")
    r1.plot(
        plots.scatter(sgd["mem"], sam["mem"], ("SGD mem", "SAM mem"), out / f"mem_scatter_{ds}.png", ds),
        f"{ds}: memorization of each training point, SAM against SGD",
    )
    if "test_rare" in sgd:
        rare, trare = sgd["test_rare"].astype(bool), sgd["train_rare"].astype(bool)
        names = [n for n in m if n.startswith(ds + "-")]
        r1.text("The planted rare sub-populations (2 training examples each; their labels can only be memorised):")
        r1.table(
            ["pool", "rare test acc", "typical test acc", "rare train mem", "typical train mem"],
            [
                [
                    n,
                    fmt(float(m[n]["test_acc_pt"][rare].mean())),
                    fmt(float(m[n]["test_acc_pt"][~rare].mean())),
                    fmt(float(np.nanmean(m[n]["mem"][trare]))),
                    fmt(float(np.nanmean(m[n]["mem"][~trare]))),
                ]
                for n in names
            ],
        )
        r1.plot(
            plots.grouped_bars(
                names,
                {
                    "rare": [float(m[n]["test_acc_pt"][rare].mean()) for n in names],
                    "typical": [float(m[n]["test_acc_pt"][~rare].mean()) for n in names],
                },
                out / f"rare_{ds}.png",
                "test accuracy",
                f"{ds}: rare vs typical test points",
            ),
            f"{ds}: test accuracy on rare and typical points per pool",
        )
    return r1


def _r2_section(ctx: Context, ds: str, m: dict[str, dict[str, np.ndarray]], sam_name: str) -> Section:
    """Every pool's attack numbers next to its train accuracy, ROCs, attack success per memorization bin, the ρ
    sweep."""
    s, main, out = ctx.settings, M.MAIN_ATTACK, ctx.plots
    sgd, sam = m[f"{ds}-sgd"], m[f"{ds}-{sam_name}"]
    r2 = Section(f"R2 on {ds}: membership inference")
    r2.text(
        "Every pool model in turn is the target and the others its shadows; pooled AUC / TPR@1%FPR over all "
        "(target, example) scores. The claims use the per-target values (CI over target models). A pool whose "
        f"train accuracy is more than {CONFOUND_GAP:.0%} below SGD's is marked: its attack gap is confounded."
    )
    r2.table(*_pool_table(ds, m, s))
    curves = {n.removeprefix(ds + "-"): (m[n]["roc_fpr"], m[n]["roc_tpr"]) for n in m if n.startswith(ds + "-")}
    plot_roc(curves, out / f"roc_{ds}.png", f"{ds}: LiRA online fixed-variance")
    r2.plot(f"roc_{ds}.png", f"{ds}: log-log ROC of LiRA (online, fixed variance), every pool")
    groups = [f"[{a:.1f}, {b:.1f})" for a, b in zip(M.MEM_EDGES[:-1], M.MEM_EDGES[1:])]
    r2.plot(
        plots.grouped_bars(
            groups,
            {"SGD": list(sgd["tpr_by_mem"]), f"SAM ρ={s['rho']:g}": list(sam["tpr_by_mem"])},
            out / f"tpr_by_mem_{ds}.png",
            "TPR @ 1 % FPR",
            f"{ds}: attack success per memorization bin",
        ),
        f"{ds}: LiRA TPR@1%FPR on members binned by FZ memorization (members per bin: SGD "
        f"{[int(v) for v in sgd['tpr_by_mem_n']]})",
    )
    r2.text(
        f"Mean Var_k(φ) over OUT models: SGD {fmt(float(np.nanmean(sgd['out_phi_var'])))}, "
        f"SAM {fmt(float(np.nanmean(sam['out_phi_var'])))}."
    )
    rhos = s["rhos"] if ds in s["sweep_on"] else [s["rho"]]
    sweep = ["sgd", *[f"sam-{r:g}" for r in rhos]]
    ticks = ["SGD", *[f"ρ={r:g}" for r in rhos]]
    acc = [ci(m[f"{ds}-{n}"]["model_test_acc"], s) for n in sweep]
    tpr = [ci(m[f"{ds}-{n}"][f"{main}.tpr"], s) for n in sweep]
    r2.plot(
        plots.lines(
            range(len(sweep)),
            {
                "test accuracy": (
                    np.array([a[0] for a in acc]),
                    np.array([a[1][0] for a in acc]),
                    np.array([a[1][1] for a in acc]),
                ),
                "TPR@1%FPR": (
                    np.array([t[0] for t in tpr]),
                    np.array([t[1][0] for t in tpr]),
                    np.array([t[1][1] for t in tpr]),
                ),
            },
            out / f"rho_sweep_{ds}.png",
            "optimizer",
            "mean over models",
            f"{ds}: the ρ sweep",
            xticks=ticks,
        ),
        f"{ds}: every point of the ρ sweep (CI over models)",
    )
    return r2
