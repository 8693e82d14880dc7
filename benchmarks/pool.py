"""Pool training vectorized over a model axis against a sequential per-model loop, and input-curvature cost.

1. K MNIST-1D MLPs (same epochs and batch), each on its own half of the data: ``pool.train_models`` (one vmapped
   computation) against K runs of the single-model training core (``take_step``) one after another, in one process.
2. Input-loss curvature of the whole training set (n = 10 probes) relative to one plain gradient pass over it.
Prints one JSON object. Usage: python benchmarks/pool.py [--models 64] [--epochs 1] [--set model.width=32]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.memorization.curvature import input_curvature
from flatpriv.pools import make_keep, train_models
from flatpriv.step import take_step
from flatpriv.train import predict, prepare


def sequential(overrides: list[str], keep: np.ndarray, seeds: list[int]) -> None:
    for row, seed in zip(keep, seeds):
        c = resolve(overrides=[*overrides, f"seed={seed}"])[0]
        s = prepare(c, torch.as_tensor(np.flatnonzero(row)))
        params = dict(s.model.named_parameters())
        state = s.pipeline.init(params)
        gen = torch.Generator().manual_seed(seed)
        n, bs = len(s.data.y_train), c.train.batch_size
        for _ in range(c.train.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                state, _ = take_step(s.pipeline, params, state, s.optimizer, s.data.x_train[idx], s.data.y_train[idx])
        full = load_data(c.data)
        predict(s.model, full.x_train, 2048), predict(s.model, full.x_test, 2048)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--algorithm", default="sgd")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for both sides, e.g. model.width=32",
    )
    a = ap.parse_args()
    overrides = [f"train.epochs={a.epochs}", f"algorithm={a.algorithm}", *a.overrides]
    cfg, _ = resolve(overrides=overrides)
    data = load_data(cfg.data)
    keep = make_keep(a.models, len(data.y_train), 0.5, 0)
    seeds = list(range(a.models))
    train_models(cfg, data, keep[:2], seeds[:2])  # warm-up
    t = time.perf_counter()
    train_models(cfg, data, keep, seeds)
    t_vec = time.perf_counter() - t
    t = time.perf_counter()
    sequential(overrides, keep, seeds)
    t_seq = time.perf_counter() - t

    s = prepare(cfg)
    model, x, y = s.model, data.x_train, data.y_train
    t = time.perf_counter()
    for i in range(0, len(x), 256):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 256]), y[i : i + 256]).backward()
    t_grad = time.perf_counter() - t
    t = time.perf_counter()
    input_curvature(model, x, y, n_probes=10, generator=torch.Generator().manual_seed(0))
    t_curv = time.perf_counter() - t
    print(
        json.dumps(
            {
                "models": a.models,
                "epochs": a.epochs,
                "algorithm": a.algorithm,
                "overrides": a.overrides,
                "model": f"{cfg.model.name} {cfg.model.depth}x{cfg.model.width}",
                "threads": torch.get_num_threads(),
                "vectorized_seconds": round(t_vec, 2),
                "sequential_seconds": round(t_seq, 2),
                "speedup": round(t_seq / t_vec, 3),
                "gradient_pass_seconds": round(t_grad, 4),
                "curvature_seconds": round(t_curv, 4),
                "curvature_over_gradient_pass": round(t_curv / t_grad, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
