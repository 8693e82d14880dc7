"""curvature-memorization's ``measure`` stage: per training point, Feldman–Zhang memorization and input-loss
curvature of every run and pool, saved as ``arrays/measures-<stage>.npz`` (plain arrays, read without pickle)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import results
from ..analyses.curvature import pool_weights
from ..config import config_from_dict
from ..data import load_data
from ..memorization.curvature import VARIANTS, aggregate, input_curvatures
from ..models import build_model
from . import measures as M
from .runner import Context


def _run_curvature(run_dir: Path) -> dict[str, np.ndarray]:
    """A full-data run's curvature kept every k epochs, averaged over training, per variant."""
    out = {}
    for v in VARIANTS:
        prefix = "curvature" if v == "norm" else f"curvature_{v}"
        files = sorted((run_dir / "arrays").glob(f"{prefix}_epoch_*.npy"))
        out[f"run.{v}"] = np.stack([results.load_array(f) for f in files]).mean(0)
        out[f"run_last.{v}"] = results.load_array(files[-1])
    return out


def _pool_curvature(run_dir: Path, probes: int, seed: int, examples: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every pool model's curvature of the training points ``examples`` (all when None), the same probes for every
    model; aggregated per point over the models that held it IN (mean, and max as in the authors' code)."""
    cfg = config_from_dict(results.read_json(run_dir / "config.json"))
    data = load_data(cfg.data)
    keep = torch.as_tensor(results.load_array(run_dir / "arrays" / "keep.npy"))
    idx = torch.arange(len(data.y_train)) if examples is None else torch.as_tensor(examples)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    per_model: dict[str, list[torch.Tensor]] = {v: [] for v in VARIANTS}
    t0 = time.perf_counter()
    for w in pool_weights(run_dir):
        model.load_state_dict(w)
        scores = input_curvatures(
            model, data.x_train[idx], data.y_train[idx], n_probes=probes, generator=torch.Generator().manual_seed(seed)
        )
        for v in VARIANTS:
            per_model[v].append(scores[v])
    out = {"curvature_seconds": np.array(time.perf_counter() - t0), "curvature_examples": idx.numpy()}
    mask = keep[:, idx]
    for v in VARIANTS:
        stacked = torch.stack(per_model[v])
        out[f"pool_mean.{v}"] = aggregate(stacked, "mean", mask).numpy()
        out[f"pool_max.{v}"] = aggregate(stacked, "max", mask).numpy()
    return out


def _pool_measures(run_dir: str, attacks: bool, delta: float) -> dict[str, np.ndarray]:
    p = M.pool(run_dir)
    out: dict[str, Any] = {
        "mem": M.memorization_scores(p),
        "model_test_acc": M.test_correct(p).mean(1),
        "train_acc": np.array(M.train_accuracy(p)),
    }
    if attacks:
        scores, members = M.attack_score(p, M.MAIN_ATTACK)
        out["auc"] = M.per_model_attack(scores, members)["auc"]
        out["eps_lower"] = np.array(M.audit(scores, members, delta))
    return out


def measure_stage(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    files = {}
    for name, rec in ctx.done.items():
        if rec.get("kind") not in ("pool", "run"):
            continue
        run_dir = Path(rec["run_dir"])
        if rec["kind"] == "run":
            m = _run_curvature(run_dir)
            cfg = config_from_dict(results.read_json(run_dir / "config.json"))
            m["flipped"] = np.asarray(load_data(cfg.data).meta["flipped"])
        else:
            dp = name.startswith("dp-")
            m = _pool_measures(rec["run_dir"], dp, s["delta"])
            subset = None
            if dp:
                n = len(m["mem"])
                # one fixed subset for every DP pool (they share the data set), drawn from the study's seed
                perm = np.random.default_rng([s["seed"], 0xC0]).permutation(n)
                subset = np.sort(perm[: min(s["dp_curvature_examples"], n)])
            m.update(_pool_curvature(run_dir, s["probes"], s["seed"], subset))
        path = ctx.run_dir / "arrays" / f"measures-{name}.npz"
        path.parent.mkdir(exist_ok=True)
        np.savez(path, **m)
        files[name] = str(path.relative_to(ctx.run_dir))
    return {"files": files}
