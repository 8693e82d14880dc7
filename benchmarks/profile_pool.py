"""Where a pool's time goes: ``torch.profiler`` over ``train_models`` of K MNIST-1D MLPs (one epoch with the pool's
final evaluation), after one untimed warm-up pool of the same shape.

Prints the profiler's table of operators by self CPU time (the top ``--rows``), then one JSON object with the
total self CPU time, each of those operators' share of it, and the bound the matmuls set: the pool's FLOPs
(FlopCounterMode, all of them matmuls) over the matmul operators' own time is the fraction of the ``bmm`` peak
(:mod:`limits`, the same shapes as ``benchmarks/pool.py``) the pool would reach if everything else took no time.
Usage: python benchmarks/profile_pool.py [--models 64] [--epochs 1] [--rows 15] [--set model.width=256]
"""

from __future__ import annotations

import argparse
import json

from limits import add_allocator_flag, apply_allocator, cache_capacity, count_flops
from pool import _largest_matmul
from torch.profiler import ProfilerActivity, profile

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.pools import make_keep, train_models

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    kept = apply_allocator(a)
    cfg = resolve(overrides=[f"train.epochs={a.epochs}", *a.overrides])[0]
    data = load_data(cfg.data, cfg.train.device)
    keep = make_keep(a.models, len(data.y_train), 0.5, 0)
    seeds = list(range(a.models))
    train_models(cfg, data, keep, seeds)  # warm-up: allocator, thread pool, kernels
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_models(cfg, data, keep, seeds)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=40))
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.rows]
    share = {e.key: {"self_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count} for e in top}
    matmul_s = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e6
    flops = count_flops(lambda: train_models(cfg, data, keep, seeds))
    peak = _largest_matmul(cfg, a.models, cfg.train.device)
    out = {
        "models": a.models,
        "epochs": a.epochs,
        "allocator_kept_freed_memory": kept,
        "onednn_primitive_cache_capacity": cache_capacity(),
        "self_cpu_ms": round(total / 1e3, 1),
        "top": share,
        "matmul_share": round(matmul_s / (total / 1e6), 3),
        "flops": flops,
        "matmul_flop_per_s": flops / matmul_s,
        "matmul_peak": peak,
        "matmul_fraction_of_peak": round(flops / matmul_s / peak["flop_per_s"], 3),  # the pool's ceiling
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
