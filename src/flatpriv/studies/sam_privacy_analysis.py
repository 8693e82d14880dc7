"""sam-privacy's analysis: per-unit measurements of every pool (the ``measure`` stage, saved as arrays), then the
claims' intervals and verdicts, the plots and the report sections (:func:`analyse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_from_dict
from ..data import load_data
from ..memorization import entropy_buckets
from . import measures as M
from .runner import Context


def _measure_pool(run_dir: str, dp: bool, delta: float) -> dict[str, np.ndarray]:
    p = M.pool(run_dir)
    corr = M.test_correct(p)
    out: dict[str, Any] = {
        "test_acc_pt": corr.mean(0),
        "model_test_acc": corr.mean(1),
        "train_acc": np.array(M.train_accuracy(p)),
        "mem": M.memorization_scores(p),
        "entropy": M.entropy(p),
        "out_phi_var": M.out_phi_variance(p),
    }
    for attack, (scores, members) in M.attack_scores(p).items():
        per = M.per_model_attack(scores, members)
        out[f"{attack}.auc"], out[f"{attack}.tpr"] = per["auc"], per["tpr"]
        pooled = M.pooled_attack(scores, members)
        out[f"{attack}.pooled_auc"] = np.array(pooled["auc"])
        out[f"{attack}.pooled_tpr"] = np.array(pooled["tpr_at_1pct"])
        if attack == M.MAIN_ATTACK:
            idx = np.unique(np.r_[np.searchsorted(pooled["fpr"], np.geomspace(1e-5, 1, 400)), len(pooled["fpr"]) - 1])
            idx = idx[idx < len(pooled["fpr"])]
            out["roc_fpr"], out["roc_tpr"] = pooled["fpr"][idx], pooled["tpr"][idx]
            out["tpr_by_mem"], out["tpr_by_mem_n"] = M.tpr_by_memorization(
                scores, members.astype(bool), out["mem"], M.MEM_EDGES
            )
        if dp:
            out[f"{attack}.eps_lower"] = np.array(M.audit(scores, members, delta))
    cfg = config_from_dict(p["config"])
    if cfg.data.name == "synthetic-longtail":
        data = load_data(cfg.data)
        out["test_rare"], out["train_rare"] = data.meta["test_rare"], data.meta["train_rare"]
    return out


def measure_stage(ctx: Context) -> dict[str, Any]:
    """Every pool's per-unit measurements, saved as arrays/measures-<pool>.npz (plain arrays, no pickle)."""
    pools = {name: rec for name, rec in ctx.done.items() if rec.get("kind") == "pool"}
    files = {}
    for name, rec in pools.items():
        m = _measure_pool(rec["run_dir"], name.startswith("dp-"), ctx.settings["delta"])
        path = ctx.run_dir / "arrays" / f"measures-{name}.npz"
        np.savez(path, **m)
        files[name] = str(path)
    return {"files": files}


def load_measures(ctx: Context) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, path in ctx.done["measure"]["files"].items():
        with np.load(Path(path), allow_pickle=False) as z:
            out[name] = {k: z[k] for k in z.files}
    return out


def _bucket_diff(
    entropy: np.ndarray, acc_a: np.ndarray, acc_b: np.ndarray, n: int, resamples: int, seed: int
) -> tuple[float, float, float, int]:
    """Δ₁ − Δ_n with Δ_b = mean over bucket b's test points of (B − A); stratified bootstrap over test points."""
    buckets = entropy_buckets(entropy, n)
    d = acc_b - acc_a
    first, last = np.flatnonzero(buckets == 0), np.flatnonzero(buckets == n - 1)
    value = float(d[first].mean() - d[last].mean())
    rng = np.random.default_rng(seed)
    draws = [d[rng.choice(first, len(first))].mean() - d[rng.choice(last, len(last))].mean() for _ in range(resamples)]
    return value, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)), len(first) + len(last)


def analyse(ctx: Context):  # noqa: ANN201
    from .sam_privacy_report import build

    return build(ctx, load_measures(ctx), _bucket_diff)
