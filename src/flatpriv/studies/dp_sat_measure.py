"""The dp-sat study's measurement stages (the Opacus reference row, final sharpness) and its per-pool numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import results
from ..config_io import resolve
from . import opacus_reference, stages
from .dp_sat import ALGORITHMS, arms, overrides, pool_name
from .runner import Context


def opacus_stage(arm: str, eps: float) -> Callable[[Context], dict[str, Any]]:
    """Opacus DP-SGD at the σ flatpriv calibrated for this arm's DP-SGD pool at ε (same q, steps, C, model)."""

    def run(ctx: Context) -> dict[str, Any]:
        s = ctx.settings
        if not opacus_reference.available():
            return {"not_run": "Opacus is not installed (pip install -e '.[bench]')", "runs": []}
        sigma = ctx.done[pool_name(arm, "dpsgd", eps)]["summary"]["noise_multiplier"]
        cfg, _ = resolve(preset="dpsgd", overrides=overrides(s, arms(s)[arm], "dpsgd", eps))
        seeds = range(s["seed"], s["seed"] + s["opacus_seeds"])
        return {"runs": [opacus_reference.opacus_dpsgd(cfg, sigma, k, s["opacus_mode"]) for k in seeds]}

    return run


def sharpness_stage(arm: str) -> Callable[[Context], dict[str, Any]]:
    """λ_max and tr ∇²L of the first ``sharpness_models`` models of every pool of this arm."""
    return stages.sharpness_stage(lambda s: [pool_name(arm, a, e) for e in s["epsilons"] for a in ALGORITHMS])


def pool_numbers(rec: dict[str, Any]) -> dict[str, Any]:
    """Per model (sorted): test accuracy and releases; the pool's σ, ε, q and wall seconds per model-epoch."""
    run_dir = Path(rec["run_dir"])
    su = rec["summary"]
    models = sorted(results.read_jsonl(run_dir / "models.jsonl"), key=lambda m: m["model"])
    epochs = results.read_json(run_dir / "config.json")["train"]["epochs"]
    return {
        "test": np.array([m["test_accuracy"] for m in models]),
        "train": np.array([m["train_accuracy"] for m in models]),
        "releases": [m.get("releases") for m in models],
        "sigma": su["noise_multiplier"],
        "epsilon": su["epsilon"],
        "sample_rate": su["sample_rate"],
        "epochs": epochs,
        "seconds_per_epoch": su["wall_seconds"] / (epochs * len(models)),
    }
