"""Where a pool's time goes: ``torch.profiler`` over ``train_models`` of K MNIST-1D MLPs (one epoch with the pool's
final evaluation), after one untimed warm-up pool of the same shape.

Prints the profiler's table of operators by self CPU time (the top ``--rows``), then one JSON object with the
total self CPU time and each of those operators' share of it.
Usage: python benchmarks/profile_pool.py [--models 64] [--epochs 1] [--rows 15] [--set model.width=256]
"""

from __future__ import annotations

import argparse
import json

from torch.profiler import ProfilerActivity, profile

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.pools import make_keep, train_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
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
    print(json.dumps({"models": a.models, "epochs": a.epochs, "self_cpu_ms": round(total / 1e3, 1), "top": share}))


if __name__ == "__main__":
    main()
