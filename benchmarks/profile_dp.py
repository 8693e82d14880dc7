"""Where a DP-SGD step's time goes: ``torch.profiler`` over DP-SGD (ghost) and SGD steps on the same batches.

Prints, per variant, the profiler's table of operators by self CPU time (the top ``--rows``), after a warm-up.
Usage: python benchmarks/profile_dp.py [--allocator keep|default] [--model mlp|cnn1d] [--steps 50]
[--batch-size 256] [--rows 15]
"""

from __future__ import annotations

import argparse

import torch
from dp_step import flatpriv_step
from limits import add_allocator_flag, apply_allocator, cache_capacity
from step_time import MODELS
from torch.profiler import ProfilerActivity, profile

from flatpriv.config import DataConfig
from flatpriv.data import load_data
from flatpriv.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="mlp", choices=list(MODELS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rows", type=int, default=15)
    a = ap.parse_args()
    kept = apply_allocator(a)
    data = load_data(DataConfig(name="mnist1d"))
    n = len(data.y_train)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, n, (a.batch_size,), generator=g) for _ in range(a.steps + 5)]
    for name, (alg, method) in {"sgd": ("sgd", "auto"), "dpsgd_ghost": ("dpsgd", "ghost")}.items():
        torch.manual_seed(0)
        step = flatpriv_step(
            alg, build_model(MODELS[a.model], data.input_shape, data.num_classes), n, a.batch_size, method
        )
        for idx in batches[:5]:
            step(data.x_train[idx], data.y_train[idx])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for idx in batches[5:]:
                step(data.x_train[idx], data.y_train[idx])
        print(
            f"== {a.model} {name}: {a.steps} steps of batch {a.batch_size} (allocator kept freed memory: {kept}, "
            f"oneDNN primitive cache: {cache_capacity()})"
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
