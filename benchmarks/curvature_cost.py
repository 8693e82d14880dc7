"""The cost of input-loss curvature against Feldman–Zhang memorization (paper 2's "three orders of magnitude").

In one process, on the same data and model: (1) FZ memorization from a pool of K models with exact half masks
(``flatpriv pool`` then the FZ estimator), and (2) curvature from one model trained on all the data with curvature
kept every k epochs (all three variants from the same probes), averaged over training. Wall times of each whole
command (data loading, training, scoring), their ratio, and the ratio per model. Prints one JSON object.
Usage: python benchmarks/curvature_cost.py [--models 128] [--epochs 30] [--every 3] [--set model.width=256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from flatpriv.config_io import resolve
from flatpriv.memorization import correctness, memorization
from flatpriv.pools import train_pool
from flatpriv.results import load_array
from flatpriv.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=3, help="curvature every k epochs of the full-data run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    overrides = [f"train.epochs={a.epochs}", *a.overrides]
    cfg, _ = resolve(overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        from flatpriv.data import load_data

        load_data(cfg.data)  # warm the data cache outside both timings
        t = time.perf_counter()
        pool = train_pool(cfg, a.models, keep_fraction=0.5, out=out, quiet=True)
        arrays = f"{pool['run_dir']}/arrays"
        keep, logits = load_array(f"{arrays}/keep.npy"), load_array(f"{arrays}/train_logits.npy")
        memorization(keep, correctness(logits, load_array(f"{arrays}/train_labels.npy")))
        t_fz = time.perf_counter() - t
        run_cfg, _ = resolve(overrides=[*overrides, f"train.curvature_every={a.every}"])
        t = time.perf_counter()
        train(run_cfg, out=out, quiet=True)
        t_curv = time.perf_counter() - t
        plain_cfg, _ = resolve(overrides=overrides)
        t = time.perf_counter()
        train(plain_cfg, out=out, quiet=True)
        t_plain = time.perf_counter() - t
    print(
        json.dumps(
            {
                "models": a.models,
                "epochs": a.epochs,
                "curvature_every": a.every,
                "overrides": a.overrides,
                "model": f"{cfg.model.name} {cfg.model.depth}x{cfg.model.width}",
                "threads": torch.get_num_threads(),
                "fz_pool_seconds": round(t_fz, 2),
                "curvature_run_seconds": round(t_curv, 2),
                "plain_run_seconds": round(t_plain, 2),
                "curvature_overhead_seconds": round(t_curv - t_plain, 2),
                "fz_over_curvature": round(t_fz / t_curv, 2),
                "fz_over_curvature_per_model": round(t_fz / t_curv / a.models, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
