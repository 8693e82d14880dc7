"""curvature-memorization's analysis: R3a, R3b, R4a, R4b verdicts, the report's sections and plots."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from .. import results
from ..memorization.curvature import VARIANTS
from . import curvature_memorization_plots as cplots
from .claims import Measurement, Result, bootstrap, ci
from .curvature_memorization import CLAIMS
from .report import Section, fmt
from .runner import Context

MAIN = "run.norm"  # the claim's curvature: one full-data model averaged over training, the authors' 'norm'


def _load(ctx: Context, name: str) -> dict[str, np.ndarray]:
    return results.load_array(ctx.run_dir / ctx.done["measure"]["files"][name])


def _stat(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    if kind == "spearman":
        return float(spearmanr(a, b).statistic)
    if kind == "pearson":
        return float(pearsonr(a, b).statistic)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _correlation(kind: str, x: np.ndarray, y: np.ndarray, s: dict[str, Any]) -> tuple[float, float, float, int]:
    ok = np.isfinite(x) & np.isfinite(y)
    a, b = x[ok], y[ok]
    value, lo, hi = bootstrap(lambda i: _stat(kind, a[i], b[i]), len(a), s["resamples"], s["seed"])
    return value, lo, hi, len(a)


def _r3a(ctx: Context, s: dict[str, Any]) -> tuple[Result, Section]:
    run, pool = _load(ctx, "full-run"), _load(ctx, "pool")
    mem = pool["mem"]
    scores = {
        f"{way}.{v}": (run if way.startswith("run") else pool)[f"{way}.{v}"]
        for way in ("run", "run_last", "pool_mean", "pool_max")
        for v in VARIANTS
    }
    rows, main = [], None
    for name, curv in scores.items():
        stats = {k: _correlation(k, curv, mem, s) for k in ("spearman", "pearson", "cosine")}
        if name == MAIN:
            main = stats["spearman"]
        rows.append([name, *[f"{fmt(v[0])} [{fmt(v[1])}, {fmt(v[2])}]" for v in stats.values()], stats["spearman"][3]])
    assert main is not None
    part = Measurement(main[0], main[1], main[2], main[3], "training points", ">", 0.0, "full-data model, 'norm'")
    sec = Section("R3a: curvature against memorization").text(
        f"FZ memorization from the {s['models']}-model pool (exact half masks, 0/1 correctness). Curvature: 'run' is "
        f"one model trained on all {len(mem)} training points, averaged over the checkpoints every "
        f"{s['curvature_every']} epochs (the claim's score); 'run_last' its last checkpoint only; 'pool_mean' and "
        "'pool_max' aggregate each pool model's curvature over the models that held the point IN. Variants: 'norm' "
        "(mean ‖δ‖, the authors' code), 'squared' (≈ tr H²), 'trace' (≈ tr H); "
        f"{s['probes']} Rademacher probes, h = 1e-3. CIs resample training points."
    )
    sec.table(["curvature", "Spearman [95 % CI]", "Pearson", "cosine", "points"], rows)
    shown = {
        "run, norm": scores["run.norm"],
        "pool max, norm": scores["pool_max.norm"],
        "run, trace": scores["run.trace"],
    }
    bins = {k: cplots.binned(mem, v) for k, v in shown.items()}
    sec.plot(
        cplots.binned_plot(bins, ctx.plots / "binned.png", "mean curvature per memorization bin (Thm 5.1)"),
        "mean curvature in 50 memorization bins of width 0.02, with the count-weighted linear fit of Thm 5.1",
    )
    sec.plot(cplots.scatter(mem, shown, ctx.plots / "scatter.png"), "curvature against FZ memorization, every point")
    cost_pool = ctx.done["pool"]["wall_seconds"]  # each stage's whole wall time: data, training, curvature
    cost_run = ctx.done["full-run"]["wall_seconds"]
    cost_pool_curv = float(pool["curvature_seconds"])
    sec.text(
        f"Cost on this machine: the FZ pool took {fmt(cost_pool)} s to train ({s['models']} models, vmapped); the "
        f"full-data run, curvature every {s['curvature_every']} epochs included, {fmt(cost_run)} s: a ratio of "
        f"{fmt(cost_pool / cost_run)}× (paper 2 claims ≈ 1000× against 2000-model FZ pools trained one by one). "
        f"The pool's own curvature took {fmt(cost_pool_curv)} s more on top of the pool."
    )
    extra = {
        "cost_ratio_fz_over_curvature": cost_pool / cost_run,
        "slopes": {k: float(b["slope"]) for k, b in bins.items()},
    }
    return Result(CLAIMS[0], [part], extra), sec


def _auroc(y: np.ndarray, score: np.ndarray, s: dict[str, Any]) -> tuple[float, float, float, int]:
    ok = np.isfinite(score)
    y, score = y[ok], score[ok]

    def stat(i: np.ndarray) -> float:
        return float(roc_auc_score(y[i], score[i])) if 0 < y[i].sum() < len(i) else float("nan")

    value, lo, hi = bootstrap(stat, len(y), s["resamples"], s["seed"])
    return value, lo, hi, len(y)


def _r3b(ctx: Context, s: dict[str, Any]) -> tuple[Result, Section]:
    sec = Section("R3b: curvature finds mislabelled examples").text(
        "Symmetric label noise: a fraction p of the training labels replaced by a different class (data seed fixed, "
        "so the run and the pool see the same flips). Scores: the full-data model's curvature averaged over training "
        "('norm', the claim's), the noisy pool's max over IN models, and FZ memorization of that pool (comparison). "
        "CIs resample training points."
    )
    rows, parts = [], []
    for p in s["noise_levels"]:
        run, pool = _load(ctx, f"noise{p:g}-run"), _load(ctx, f"noise{p:g}-pool")
        y = np.zeros(len(pool["mem"]), dtype=int)
        y[run["flipped"]] = 1
        curves = {}
        for name, score in (
            ("curvature (run)", run["run.norm"]),
            ("curvature (pool max)", pool["pool_max.norm"]),
            ("FZ memorization", pool["mem"]),
        ):
            a = _auroc(y, score, s)
            ok = np.isfinite(score)
            ap = float(average_precision_score(y[ok], score[ok]))
            fpr, tpr, _ = roc_curve(y[ok], score[ok])
            curves[name] = (fpr, tpr, a[0])
            rows.append([f"{p:g}", name, f"{fmt(a[0])} [{fmt(a[1])}, {fmt(a[2])}]", ap, int(y.sum()), a[3]])
            if name == "curvature (run)" and p == 0.1:
                parts.append(Measurement(a[0], a[1], a[2], a[3], "training points", ">=", 0.9, "10 % noise"))
        sec.plot(
            cplots.roc_plot(curves, ctx.plots / f"roc_noise{p:g}.png", f"{p:.0%} symmetric label noise"),
            f"finding the flipped labels at {p:.0%} noise",
        )
    sec.table(["noise", "score", "AUROC [95 % CI]", "average precision", "flipped", "points"], rows)
    return Result(CLAIMS[1], parts), sec


def _grid_spearman(eps: np.ndarray, per_point: list[np.ndarray], s: dict[str, Any]) -> tuple[float, float, float]:
    """Spearman(ε, mean over points) with the points resampled (the same points for every ε)."""
    v = np.stack(per_point)  # [E, N]

    def stat(i: np.ndarray) -> float:
        return float(spearmanr(eps, np.nanmean(v[:, i], 1)).statistic)

    return bootstrap(stat, v.shape[1], s["resamples"], s["seed"])


def _r4(ctx: Context, s: dict[str, Any]) -> tuple[Result, Result, Section]:
    eps = np.array(s["dp_epsilons"], dtype=float)
    ms = [_load(ctx, f"dp-eps{e:g}") for e in eps]
    inf = _load(ctx, "dp-nonprivate")
    mems, curvs = [m["mem"] for m in ms], [m["pool_mean.norm"] for m in ms]
    mem_ci = [ci(m, s) for m in mems]
    curv_ci = [ci(c, s) for c in curvs]
    r_mem = _grid_spearman(eps, mems, s)
    r_curv = _grid_spearman(eps, curvs, s)
    parts_a = [Measurement(*r_mem, len(mems[0]), "training points", ">", 0.0, "Spearman(ε, mean mem)")]
    for e, m, (v, (lo, hi)) in zip(eps, mems, mem_ci):
        bound = float(1 - np.exp(-e))
        parts_a.append(
            Measurement(
                v,
                lo,
                hi,
                int(np.isfinite(m).sum()),
                "training points",
                "<=",
                bound,
                f"ε = {e:g}: mean mem ≤ {bound:.3g}",
            )
        )
    curv_means = np.array([c[0] for c in curv_ci])
    fit = cplots.fit_saturation(eps, curv_means)
    parts_b = [Measurement(*r_curv, len(curvs[0]), "training points", ">", 0.0, "Spearman(ε, mean curvature)")]
    rows = []
    for e, m, mc, cc in zip(eps, ms, mem_ci, curv_ci):
        summ = ctx.done[f"dp-eps{e:g}"]["summary"]
        rows.append(
            [
                f"{e:g}",
                summ["epsilon"],
                float(m["eps_lower"]),
                float(np.mean(m["auc"])),
                mc[0],
                f"[{fmt(mc[1][0])}, {fmt(mc[1][1])}]",
                float(1 - np.exp(-e)),
                cc[0],
                float(np.mean(m["model_test_acc"])),
            ]
        )
    inf_mem, inf_curv = float(np.nanmean(inf["mem"])), float(np.nanmean(inf["pool_mean.norm"]))
    inf_acc = float(np.mean(inf["model_test_acc"]))
    rows.append(
        ["∞ (SGD)", None, float(inf["eps_lower"]), float(np.mean(inf["auc"])), inf_mem, "", 1.0, inf_curv, inf_acc]
    )
    size = s["dp_samples"] if s["dataset"] == "mnist1d" else "all"
    sec = Section("R4: memorization and curvature against ε under DP-SGD").text(
        f"DP-SGD pools of {s['dp_models']} models (exact half masks) on {size} {s['dataset']} examples (MNIST-1D: "
        f"80 % train), MLP 2 × {s['dp_width']}, expected batch {s['dp_batch_size']}, {s['dp_epochs']} epochs, "
        f"C = {s['clip_norm']:g}, δ = {s['delta']:g}, σ calibrated by PLD (add/remove-one) to each ε; the "
        "non-private pool is SGD with the same data, model, batch and epochs. Memorization is the mean FZ score over "
        "all training points; curvature the "
        f"mean over {s['dp_curvature_examples']} fixed training points of each point's mean over the models holding "
        "it IN. The ε lower bound is the Clopper–Pearson audit (a heuristic, flatpriv.privacy.audit) on LiRA online "
        "fixed-variance scores pooled over target models; AUC is that attack's mean over target models."
    )
    sec.table(
        [
            "ε",
            "accountant ε",
            "audit ε lower bound",
            "LiRA AUC",
            "mean mem",
            "95 % CI",
            "1 − e^{−ε}",
            "mean curvature",
            "test acc",
        ],
        rows,
    )
    sec.text(
        "Fit of Thm 5.3's shape to the mean curvature: "
        + (f"a = {fmt(fit[0])}, b = {fmt(fit[1])}, c = {fmt(fit[2])}." if fit else "the fit did not converge.")
    )
    band = lambda c: (np.array([x[0] for x in c]), np.array([x[1][0] for x in c]), np.array([x[1][1] for x in c]))  # noqa: E731
    acc = np.array([float(np.mean(m["model_test_acc"])) for m in ms])
    sec.plot(
        cplots.epsilon_plot(
            eps, band(mem_ci), band(curv_ci), acc, (inf_mem, inf_curv, inf_acc), fit, ctx.plots / "epsilon.png"
        ),
        "memorization with its bound, curvature with the fitted Thm 5.3 curve, and test accuracy against ε",
    )
    extra = {"fit": fit, "nonprivate": {"mem": inf_mem, "curvature": inf_curv, "test_accuracy": inf_acc}}
    return Result(CLAIMS[2], parts_a), Result(CLAIMS[3], parts_b, extra), sec


def analyse(ctx: Context) -> tuple[list[Result], list[Section]]:
    s = ctx.settings
    r3a, sec_a = _r3a(ctx, s)
    r3b, sec_b = _r3b(ctx, s)
    r4a, r4b, sec_c = _r4(ctx, s)
    return [r3a, r3b, r4a, r4b], [sec_a, sec_b, sec_c]
