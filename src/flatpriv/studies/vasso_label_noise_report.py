"""The vasso-label-noise study's analysis: the R7 verdict and the report's sections and plots."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import plots as splots
from .claims import Measurement, Result, ci, paired
from .report import Section, fmt
from .runner import Context
from .vasso_label_noise import CLAIMS, optimizers, pool_name
from .vasso_label_noise_measure import pool_numbers
from .vasso_label_noise_plots import direction_curves

UNIT = "seeds"


def _pct(p: float) -> str:
    return f"{round(p * 100)} %"


def _numbers(ctx: Context, arch: str) -> dict[tuple[str, float], dict[str, np.ndarray]]:
    s = ctx.settings
    return {
        (opt, p): pool_numbers(ctx.done[pool_name(arch, opt, p)]["run_dir"])
        for p in s["noise_levels"]
        for opt in optimizers(s)
    }


def _parts(s: dict[str, Any], arch: str, nums: dict) -> list[Measurement]:
    vasso = f"vasso-{s['judged_theta']:g}"
    parts = []
    for p in s["noise_levels"]:
        acc = {o: nums[(o, p)]["test"] for o in ("sgd", "sam", vasso)}
        parts.append(paired(acc["sam"], acc[vasso], UNIT, s, relation=">=", label=f"{arch}, {_pct(p)}: VaSSO − SAM"))
        parts.append(paired(acc["sgd"], acc["sam"], UNIT, s, relation=">=", label=f"{arch}, {_pct(p)}: SAM − SGD"))
    gap = {p: nums[(vasso, p)]["test"] - nums[("sam", p)]["test"] for p in (0.0, 0.4)}
    parts.append(paired(gap[0.0], gap[0.4], UNIT, s, label=f"{arch}: (VaSSO − SAM) at 40 % − at 0 %"))
    return parts


def _sharp(ctx: Context, arch: str, opt: str, p: float) -> tuple[float | None, float | None]:
    rec = ctx.done.get(f"sharpness-{arch}")
    if not rec:
        return None, None
    models = rec["pools"][pool_name(arch, opt, p)]
    return float(np.mean([m["lambda_max"] for m in models])), float(np.mean([m["trace_mean"] for m in models]))


def _accuracy_section(ctx: Context, arch: str, nums: dict) -> Section:
    s = ctx.settings
    sec = Section(f"R7 on the {arch}: accuracy, memorised noise and sharpness")
    sec.text(
        f"{s['seeds']} seeds per optimizer (pool models with keep fraction 1, model k seed {s['seed']} + k, paired "
        "across optimizers). Test accuracy with its 95 % bootstrap CI over seeds. On the training set: accuracy on "
        "the clean points, the fraction of flipped points predicted as their noisy label (the noise memorised), "
        "and as their true label. λ_max and tr ∇²L: mean over the first "
        f"{s['sharpness_models']} models of each pool, on {s['sharpness_subset']} fixed training points."
    )
    rows = []
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for opt in optimizers(s):
        vals, lows, highs = [], [], []
        for p in s["noise_levels"]:
            n = nums[(opt, p)]
            v, (lo, hi) = ci(n["test"], s)
            vals.append(v)
            lows.append(lo)
            highs.append(hi)
            lam, tr = _sharp(ctx, arch, opt, p)
            rows.append(
                [
                    _pct(p),
                    opt,
                    fmt(v),
                    f"[{fmt(lo)}, {fmt(hi)}]",
                    fmt(float(n["test"].std(ddof=1))),
                    fmt(float(np.mean(n["train_clean"]))),
                    fmt(float(np.nanmean(n["flipped_noisy"]))) if p > 0 else "—",
                    fmt(float(np.nanmean(n["flipped_true"]))) if p > 0 else "—",
                    fmt(lam),
                    fmt(tr),
                ]
            )
        series[opt] = (np.array(vals), np.array(lows), np.array(highs))
    sec.table(
        [
            "noise",
            "optimizer",
            "test acc",
            "95 % CI",
            "sd",
            "train acc (clean)",
            "flipped → noisy label",
            "flipped → true label",
            "λ_max",
            "tr ∇²L",
        ],
        rows,
    )
    xs = [100 * p for p in s["noise_levels"]]
    name = splots.lines(
        xs, series, ctx.plots / f"accuracy_{arch}.png", "label noise (%)", "test accuracy", f"{arch}: test accuracy"
    )
    sec.plot(name, f"{arch}: test accuracy against label noise, mean over seeds with 95 % CI")
    mem = {o: [float(np.nanmean(nums[(o, p)]["flipped_noisy"])) for p in s["noise_levels"] if p > 0] for o in series}
    name = splots.grouped_bars(
        [_pct(p) for p in s["noise_levels"] if p > 0],
        mem,
        ctx.plots / f"memorised_noise_{arch}.png",
        "flipped points fit to their noisy label",
        f"{arch}: noise memorised",
    )
    sec.plot(name, f"{arch}: fraction of flipped training points predicted as their (wrong) training label")
    return sec


def _trace_section(ctx: Context, arch: str) -> Section | None:
    s = ctx.settings
    recs = {p: ctx.done.get(f"trace-{arch}-noise{round(p * 100)}") for p in s["noise_levels"]}
    if not any(recs.values()):
        return None
    sec = Section(f"The perturbation direction's variance along training ({arch})")
    sec.text(
        f"One run per optimizer (seed {s['seed']}), traced at every step (flatpriv.studies.direction_trace): per "
        "epoch, tr Cov(u) = 1 − ‖mean u_t‖² of the unit direction u = v/‖v‖ over that epoch's steps, with v = g_t "
        "for SAM (its ε_t/ρ) and v = d_t for VaSSO; and for VaSSO the ratio of raw variances tr Cov(d_t)/tr Cov(g_t) "
        "on the same trajectory, which is θ/(2 − θ) for i.i.d. gradient noise (science.md §1.2)."
    )
    rows = []
    for p, rec in recs.items():
        if not rec:
            continue
        for opt, run in rec["runs"].items():
            ser = run["series"]
            key = "d" if "d" in ser else "g"
            theta = run["theta"]
            ratio = np.array(ser["d"]["variance"]) / np.array(ser["g"]["variance"]) if "d" in ser else None
            rows.append(
                [
                    _pct(p),
                    opt,
                    "d_t" if key == "d" else "g_t",
                    fmt(float(np.mean(ser[key]["unit_variance"]))),
                    fmt(float(np.mean(ser["g"]["unit_variance"]))),
                    fmt(float(np.median(ratio))) if ratio is not None else "—",
                    fmt(theta / (2 - theta)) if ratio is not None else "—",
                    fmt(run["test_accuracy"]),
                ]
            )
        name = direction_curves(
            rec["runs"], ctx.plots / f"direction_{arch}_noise{round(p * 100)}.png", f"{arch}, {_pct(p)}"
        )
        sec.plot(name, f"{arch} at {_pct(p)} noise: tr Cov of the unit perturbation direction per epoch")
    sec.table(
        [
            "noise",
            "optimizer",
            "direction",
            "tr Cov(u), mean over epochs",
            "tr Cov(g_t/‖g_t‖), same run",
            "median tr Cov(d)/tr Cov(g)",
            "θ/(2−θ)",
            "test acc (this run)",
        ],
        rows,
    )
    return sec


def analyse(ctx: Context) -> tuple[list[Result], list[Section]]:
    s = ctx.settings
    parts: list[Measurement] = []
    sections: list[Section] = []
    for arch in s["archs"]:
        nums = _numbers(ctx, arch)
        parts += _parts(s, arch, nums)
        sections.append(_accuracy_section(ctx, arch, nums))
        trace = _trace_section(ctx, arch)
        if trace:
            sections.append(trace)
    intro = Section("How R7 is judged").text(
        f"Each part is a paired difference of test accuracy over seeds (mean and 95 % bootstrap CI, "
        f"{s['resamples']} resamples). VaSSO is judged at θ = {s['judged_theta']:g} (VaSSO's default); "
        "every other θ is in the tables. '≥ 0' is reproduced when the CI's low end is ≥ 0, not reproduced when "
        "its high end is < 0, inconclusive otherwise. 'The gap' is VaSSO − SAM (VaSSO's paper reports its "
        "label-noise gain over SAM); it is judged per seed as (VaSSO − SAM) at 40 % minus at 0 %."
    )
    return [Result(CLAIMS[0], parts)], [intro, *sections]
