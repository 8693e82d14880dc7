"""Pool training vectorized over a model axis against a sequential per-model loop, and input-curvature cost.

1. K MNIST-1D MLPs (same epochs and batch), each on its own half of the data: ``pool.train_models`` (one vmapped
   computation) against K runs of the single-model training core (``take_step``) one after another, in one process.
2. Against the machine's limit (:mod:`limits`): the FLOPs of the pool's whole training and evaluation (counted
   once with FlopCounterMode), the FLOP/s each side achieves, and the measured matmul peak for the pool's largest
   layer (MLP: ``bmm`` of [K, B, W] @ [K, W, W]; 1-D CNN on a CPU, one model at a time: the widest conv's im2col
   ``mm``), so each side's fraction of peak is printed. The machine's speed drifts by tens of per cent within
   minutes, so the peak is measured right after each timed pool (``--repeats`` rounds, after one untimed pool of
   the same shape: ``first_pool_seconds`` is that first pool, after a 2-model warm-up, with the cost of its
   first touch of the pool's memory and kernels), each pool's fraction is against the mean of the peaks measured
   just before and just after it, and the median over the rounds is reported; the sequential loop's fraction is
   against the peak measured right after it. With ``--memory``: the peak RSS (and CUDA maximum) of
   a single SGD run, a single DP-SGD run and the pool, each in its own fresh process.
3. Input-loss curvature of the whole training set (n = 10 probes) relative to one plain gradient pass over it.
Prints one JSON object. Usage: python benchmarks/pool.py [--models 64] [--epochs 1] [--repeats 3]
[--set model.width=32] [--device cpu|cuda] [--memory]
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from limits import add_allocator_flag, apply_allocator, cache_capacity, count_flops, matmul_peak, peak_memory

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.memorization.curvature import input_curvature
from flatpriv.pools import make_keep, train_models
from flatpriv.step import take_step
from flatpriv.train import predict, prepare, train


def _largest_matmul(cfg, models: int, device: str) -> dict:
    """The matmul peak for the shapes that dominate the pool's work (see the module docstring)."""
    b = cfg.train.batch_size
    if cfg.model.name == "mlp":
        return matmul_peak(models, b, cfg.model.width, cfg.model.width, device)
    # cnn1d: length 40 → 20 → 10 …; the second conv's im2col is [B·10, C·5] @ [C·5, C], one model at a time
    return matmul_peak(1, b * 10, cfg.model.width * 5, cfg.model.width, device)


def _single(overrides: list[str], tmp: str) -> None:
    train(resolve(overrides=overrides)[0], out=tmp, quiet=True)


def _pool(overrides: list[str], models: int) -> None:
    c = resolve(overrides=overrides)[0]
    d = load_data(c.data, c.train.device)
    train_models(c, d, make_keep(models, len(d.y_train), 0.5, 0), list(range(models)))


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed pools, each followed by a peak measurement")
    ap.add_argument("--algorithm", default="sgd")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--memory", action="store_true", help="also the peak memory of SGD, DP-SGD and the pool")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for both sides, e.g. model.width=32",
    )
    a = ap.parse_args()
    kept = apply_allocator(a)
    overrides = [f"train.epochs={a.epochs}", f"algorithm={a.algorithm}", f"train.device={a.device}", *a.overrides]
    cfg, _ = resolve(overrides=overrides)
    data = load_data(cfg.data, a.device)
    keep = make_keep(a.models, len(data.y_train), 0.5, 0)
    seeds = list(range(a.models))
    train_models(cfg, data, keep[:2], seeds[:2])  # warm-up of the code path
    t = time.perf_counter()
    train_models(cfg, data, keep, seeds)  # the first pool of this shape: untimed in the rounds below
    t_first = time.perf_counter() - t
    peaks = [_largest_matmul(cfg, a.models, a.device)]
    times = []
    for _ in range(max(a.repeats, 1)):
        t = time.perf_counter()
        train_models(cfg, data, keep, seeds)
        times.append(time.perf_counter() - t)
        peaks.append(_largest_matmul(cfg, a.models, a.device))
    # each pool against the mean of the peaks measured just before and just after it
    rounds = [(sec, (p0["flop_per_s"] + p1["flop_per_s"]) / 2) for sec, p0, p1 in zip(times, peaks, peaks[1:])]
    t = time.perf_counter()
    sequential(overrides, keep, seeds)
    t_seq = time.perf_counter() - t
    peak_seq = _largest_matmul(cfg, a.models, a.device)
    flops = count_flops(lambda: train_models(cfg, data, keep, seeds))
    fractions = [flops / sec / p for sec, p in rounds]
    t_vec = float(np.median(times))
    peak_median = float(np.median([p for _, p in rounds]))
    memory = None
    if a.memory:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            dp = ["algorithm=dpsgd", "privacy.noise_multiplier=1.0", "optim.schedule=constant"]
            memory = {
                "single_sgd": peak_memory(functools.partial(_single, overrides, tmp), kept),
                "single_dpsgd": peak_memory(functools.partial(_single, [*overrides, *dp], tmp), kept),
                f"pool_{a.models}": peak_memory(functools.partial(_pool, overrides, a.models), kept),
            }

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
                "allocator_kept_freed_memory": kept,
                "onednn_primitive_cache_capacity": cache_capacity(),
                "algorithm": a.algorithm,
                "overrides": a.overrides,
                "model": f"{cfg.model.name} {cfg.model.depth}x{cfg.model.width}",
                "threads": torch.get_num_threads(),
                "first_pool_seconds": round(t_first, 2),
                "vectorized_seconds": round(t_vec, 2),
                "vectorized_seconds_per_round": [round(sec, 3) for sec in times],
                "sequential_seconds": round(t_seq, 2),
                "speedup": round(t_seq / t_vec, 3),
                "device": a.device,
                "flops": flops,
                "vectorized_flop_per_s": flops / t_vec,
                "sequential_flop_per_s": flops / t_seq,
                "matmul_peak": {**peaks[0], "flop_per_s": peak_median},
                "matmul_peaks_measured": [p["flop_per_s"] for p in peaks],
                "matmul_peak_after_sequential": peak_seq["flop_per_s"],
                "vectorized_fraction_of_peak": round(float(np.median(fractions)), 3),
                "vectorized_fraction_of_peak_per_round": [round(f, 3) for f in fractions],
                "first_pool_fraction_of_peak": round(flops / t_first / peak_median, 3),
                "sequential_fraction_of_peak": round(flops / t_seq / peak_seq["flop_per_s"], 3),
                "memory": memory,
                "gradient_pass_seconds": round(t_grad, 4),
                "curvature_seconds": round(t_curv, 4),
                "curvature_over_gradient_pass": round(t_curv / t_grad, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
