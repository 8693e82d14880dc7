"""The dp-sat study's analysis: verdicts for R8a and R8b and the report's sections and plots."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import plots as splots
from .claims import Measurement, Result, bootstrap, ci, paired
from .dp_sat import ALGORITHMS, CLAIMS, NAMES, TIME_WITHIN, arms, image_sets, pool_name
from .dp_sat_measure import pool_numbers
from .report import Section, fmt
from .runner import Context

UNIT = "seeds"
PAPER = [  # setting, the paper's value (Park et al. 2023, §5 and the authors' code), ours from the settings, why
    ("clipping norm C", "0.1", "clip_norm"),
    ("learning rate", "2.0 (SGD, momentum 0.9, no decay)", "lr"),
    ("batch (expected)", "2048 of 60 000 (q ≈ 0.034)", "batch_size"),
    ("ρ", "0.03", "rho"),
    ("δ", "1e-5", "delta"),
    ("epochs", "30 (CIFAR-10), 40 (MNIST, Fashion-MNIST)", "epochs"),
]


def _time_part(ctx: Context, arm: str, alg: str, relation: str, threshold: Any) -> Measurement:
    """median step time(alg) / median step time(DP-SGD) on the interleaved steps, CI by resampling the steps."""
    t = ctx.done[f"timing-{arm}"]["step_seconds"]
    a, b = np.array(t[alg]), np.array(t["dpsgd"])
    value, lo, hi = bootstrap(lambda i: float(np.median(a[i]) / np.median(b[i])), len(a), ctx.settings["resamples"], 0)
    return Measurement(
        value, lo, hi, len(a), "timed steps", relation, threshold, f"{arm}: step time {NAMES[alg]} / DP-SGD"
    )


def _numbers(ctx: Context, arm: str) -> dict[tuple[str, float], dict[str, Any]]:
    return {
        (alg, e): pool_numbers(ctx.done[pool_name(arm, alg, e)]) for e in ctx.settings["epsilons"] for alg in ALGORITHMS
    }


def _parts(ctx: Context, arm: str, nums: dict) -> tuple[list[Measurement], list[Measurement]]:
    s = ctx.settings
    a, b = [], []
    for e in s["epsilons"]:
        sgd = nums[("dpsgd", e)]["test"]
        a.append(paired(sgd, nums[("dpsat", e)]["test"], UNIT, s, label=f"{arm}, ε = {e:g}: DP-SAT − DP-SGD"))
        b.append(
            paired(sgd, nums[("dpsam", e)]["test"], UNIT, s, relation="<", label=f"{arm}, ε = {e:g}: DP-SAM − DP-SGD")
        )

    a.append(_time_part(ctx, arm, "dpsat", "<=", 1.1))
    b.append(_time_part(ctx, arm, "dpsam", "within", TIME_WITHIN))
    return a, b


def _sharp(ctx: Context, arm: str, name: str) -> tuple[float | None, float | None]:
    rec = ctx.done.get(f"sharpness-{arm}")
    if not rec:
        return None, None
    models = rec["pools"][name]
    return float(np.mean([m["lambda_max"] for m in models])), float(np.mean([m["trace_mean"] for m in models]))


def _opacus_row(ctx: Context, arm: str, e: float) -> list[Any] | None:
    rec = ctx.done.get(f"opacus-{arm}-eps{e:g}")
    if rec is None:
        return None
    if rec.get("not_run"):
        return [f"{e:g}", "Opacus DP-SGD", "—", "—", "—", "not run", rec["not_run"], "—", "—", "—", "—", "—", "—"]
    runs = rec["runs"]
    acc = np.array([r["test_accuracy"] for r in runs])
    spe = float(np.mean([r["seconds_per_epoch"] for r in runs]))
    return [
        f"{e:g}",
        f"Opacus DP-SGD ({runs[0]['mode']})",
        fmt(runs[0]["noise_multiplier"]),
        fmt(runs[0]["epsilon"]),
        runs[0]["steps"],
        fmt(float(acc.mean())),
        f"{len(runs)} seed(s), sd {fmt(float(acc.std(ddof=1))) if len(acc) > 1 else '—'}",
        "—",
        "—",
        fmt(spe),
        "—",
        "—",
        "—",
    ]


def _arm_section(ctx: Context, arm: str, nums: dict) -> Section:
    s = ctx.settings
    sec = Section(f"{arm}: accuracy, σ, time and sharpness at each ε")
    sec.text(
        f"{s['seeds']} seeds per algorithm and ε (pool models, keep fraction 1, paired by seed). σ is calibrated by "
        f"the PLD accountant so that ε (add/remove-one, δ = {s['delta']:g}) over every release is at most the "
        "target; DP-SAM releases twice per step, so it needs a larger σ. Time: the pool's wall seconds per model "
        "and epoch on this machine, and its ratio to DP-SGD at the same ε (the claims' time parts use the "
        "interleaved step timing below instead)."
    )
    rows, series = [], {}
    for alg in ALGORITHMS:
        vals, lows, highs = [], [], []
        for e in s["epsilons"]:
            n = nums[(alg, e)]
            v, (lo, hi) = ci(n["test"], s)
            vals.append(v)
            lows.append(lo)
            highs.append(hi)
            lam, tr = _sharp(ctx, arm, pool_name(arm, alg, e))
            rows.append(
                [
                    f"{e:g}",
                    NAMES[alg],
                    fmt(n["sigma"], 4),
                    fmt(n["epsilon"], 4),
                    n["releases"][0],
                    fmt(v),
                    f"[{fmt(lo)}, {fmt(hi)}]",
                    fmt(float(n["test"].std(ddof=1))),
                    fmt(float(n["train"].mean())),
                    fmt(n["seconds_per_epoch"]),
                    fmt(n["seconds_per_epoch"] / nums[("dpsgd", e)]["seconds_per_epoch"]),
                    fmt(lam),
                    fmt(tr),
                ]
            )
        series[NAMES[alg]] = (np.array(vals), np.array(lows), np.array(highs))
    for e in s["epsilons"]:
        row = _opacus_row(ctx, arm, e)
        if row:
            rows.append(row)
    header = ["ε", "algorithm", "σ", "ε (PLD)", "releases", "test acc", "95 % CI", "sd", "train acc", "pool s / epoch"]
    sec.table([*header, "time / DP-SGD", "λ_max", "tr ∇²L"], rows)
    xs = list(range(len(s["epsilons"])))
    ticks = [f"{e:g}" for e in s["epsilons"]]
    name = splots.lines(
        xs, series, ctx.plots / f"accuracy_{arm}.png", "ε", "test accuracy", f"{arm}: accuracy at equal ε", ticks
    )
    sec.plot(name, f"{arm}: test accuracy against ε, mean over seeds with 95 % CI")
    times = {NAMES[a]: [nums[(a, e)]["seconds_per_epoch"] for e in s["epsilons"]] for a in ALGORITHMS}
    name = splots.grouped_bars(
        [f"ε = {t}" for t in ticks], times, ctx.plots / f"time_{arm}.png", "seconds per model-epoch", f"{arm}: cost"
    )
    sec.plot(name, f"{arm}: wall seconds per model and epoch")
    steps = ctx.done[f"timing-{arm}"]["step_seconds"]
    sec.text(
        f"Interleaved step timing ({len(steps['dpsgd'])} batches of {s['batch_size']}, "
        f"{ctx.done[f'timing-{arm}']['threads']} threads), median ms per step: "
        + ", ".join(f"{NAMES[a]} {1e3 * float(np.median(steps[a])):.1f}" for a in ALGORITHMS)
        + "."
    )
    sigma = [nums[("dpsam", e)]["sigma"] / nums[("dpsgd", e)]["sigma"] for e in s["epsilons"]]
    vasso = [
        paired(nums[("dpsat", e)]["test"], nums[("dpvasso_sat", e)]["test"], UNIT, s, label=f"ε = {e:g}")
        for e in s["epsilons"]
    ]
    sec.text(
        "σ(DP-SAM)/σ(DP-SGD) at each ε: "
        + ", ".join(f"{r:.3f}" for r in sigma)
        + f" (√2 = {math.sqrt(2):.3f}). DP-VaSSO-SAT − DP-SAT (flatpriv's own variant), mean [95 % CI] over seeds: "
        + "; ".join(f"{m.label}: {fmt(m.value)} [{fmt(m.low)}, {fmt(m.high)}]" for m in vasso)
        + "."
    )
    return sec


def _settings_section(s: dict[str, Any]) -> Section:
    from .dp_sat import REASONS

    sec = Section("Settings against the paper's")
    sec.table(
        ["setting", "paper 5", "here", "why"], [[name, paper, str(s[key]), REASONS[key]] for name, paper, key in PAPER]
    )
    _, notes = image_sets(s)
    sec.text(
        "Data: the paper trains on MNIST, Fashion-MNIST and CIFAR-10; here MNIST-1D (generated locally, "
        f"{s['num_samples'] * 4 // 5} training examples) with the MLP and the 1-D CNN. "
        + ("The 2-D CNN on image files: " + "; ".join(notes) + "." if notes else "")
    )
    return sec


def analyse(ctx: Context) -> tuple[list[Result], list[Section]]:
    s = ctx.settings
    a_parts: list[Measurement] = []
    b_parts: list[Measurement] = []
    sections: list[Section] = []
    for arm in arms(s):
        nums = _numbers(ctx, arm)
        a, b = _parts(ctx, arm, nums)
        a_parts += a
        b_parts += b
        sections.append(_arm_section(ctx, arm, nums))
    intro = Section("How R8a and R8b are judged").text(
        f"Accuracy parts: paired differences over seeds (mean, 95 % bootstrap CI, {s['resamples']} resamples), one "
        "part per model and ε. Time parts: the ratio of median step times to DP-SGD's, every DP row stepping the "
        f"same {s['timing_steps']} batches in turn (flatpriv.studies.dp_sat_timing), CI by resampling the timed "
        f"steps. '≈ 2×' is read as within [{TIME_WITHIN[0]:g}, {TIME_WITHIN[1]:g}], fixed before running. The "
        "pools' own wall seconds per model-epoch are in the tables; they drift with whatever else the machine runs."
    )
    results = [Result(CLAIMS[0], a_parts), Result(CLAIMS[1], b_parts)]
    return results, [intro, _settings_section(s), *sections]
