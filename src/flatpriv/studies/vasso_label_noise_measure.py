"""The vasso-label-noise study's measurement stages (direction traces, final sharpness) and its per-pool numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import results
from ..config_io import resolve
from . import stages
from .direction_trace import direction_trace
from .runner import Context
from .vasso_label_noise import ARCHS, base, optimizers, pool_name


def trace_stage(arch: str, noise: float) -> Callable[[Context], dict[str, Any]]:
    """One run per SAM-family optimizer at this model and noise level, with g_t (and d_t) traced per epoch."""

    def run(ctx: Context) -> dict[str, Any]:
        s = ctx.settings
        runs = {}
        for opt, over in optimizers(s).items():
            if opt == "sgd":
                continue
            cfg, _ = resolve(preset=ARCHS[arch], overrides=base(s, arch, noise) + over + [f"train.device={ctx.device}"])
            res = direction_trace(cfg)
            res.pop("weights")
            runs[opt] = res
        return {"runs": runs}

    return run


def sharpness_stage(arch: str) -> Callable[[Context], dict[str, Any]]:
    """λ_max and tr ∇²L of the first ``sharpness_models`` models of every pool of this model."""
    return stages.sharpness_stage(lambda s: [pool_name(arch, o, p) for p in s["noise_levels"] for o in optimizers(s)])


def pool_numbers(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Per model (sorted by model index): test accuracy, and training accuracy on the clean points, on the flipped
    points against their noisy (trained-on) labels, and on the flipped points against their true labels."""
    run_dir = Path(run_dir)
    models = sorted(results.read_jsonl(run_dir / "models.jsonl"), key=lambda m: m["model"])
    arr = run_dir / "arrays"
    pred = results.load_array(arr / "train_logits.npy").argmax(-1)  # [K, N]
    noisy = results.load_array(arr / "train_labels.npy")
    clean = results.load_array(arr / "clean_labels.npy")
    flipped = noisy != clean

    def frac(hit: np.ndarray, where: np.ndarray) -> np.ndarray:
        return hit[:, where].mean(1) if where.any() else np.full(len(hit), np.nan)

    return {
        "test": np.array([m["test_accuracy"] for m in models]),
        "train_clean": frac(pred == noisy, ~flipped),
        "flipped_noisy": frac(pred == noisy, flipped),
        "flipped_true": frac(pred == clean, flipped),
    }
