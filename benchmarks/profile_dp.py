"""Where a DP step's time goes: ``torch.profiler`` over SGD, DP-SGD (ghost) and, on request, DP-SAT and DP-SAM
steps on the same batches.

Prints, per variant, the profiler's table of operators by self CPU time (the top ``--rows``), after a warm-up;
then, for each variant after the first, what it adds to the one before it, operator by operator, per step
(self CPU µs and calls; e.g. ``--variants dpsgd,dpsat`` shows the operators DP-SAT adds to DP-SGD). The variants
are profiled one after another, so the machine's drift between them shows in every operator's time: the calls
added are exact, a time difference is only as good as the repeat that confirms it.
Usage: python benchmarks/profile_dp.py [--allocator keep|default] [--model mlp|cnn1d] [--steps 50] [--warmup 20]
[--batch-size 256] [--rows 15] [--variants sgd,dpsgd]
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

VARIANTS = {
    "sgd": ("sgd", "auto"),
    "dpsgd": ("dpsgd", "ghost"),
    "dpsat": ("dpsat", "ghost"),
    "dpsam": ("dpsam", "ghost"),
}
PerStep = dict[str, tuple[float, float]]  # operator -> (self CPU µs, calls), per step


def per_step(events, steps: int) -> PerStep:
    """The profiler's per-operator totals (``key_averages()``) divided by the number of steps profiled."""
    return {e.key: (e.self_cpu_time_total / steps, e.count / steps) for e in events}


def added(base: PerStep, other: PerStep, rows: int) -> list[tuple[str, float, float, float]]:
    """(operator, µs added per step, calls per step in ``base``, in ``other``), the largest additions first."""
    out = []
    for key in base.keys() | other.keys():
        (t0, n0), (t1, n1) = base.get(key, (0.0, 0.0)), other.get(key, (0.0, 0.0))
        out.append((key, t1 - t0, n0, n1))
    return sorted(out, key=lambda r: -r[1])[:rows]


def _variants(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of {', '.join(VARIANTS)}, each once")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="mlp", choices=list(MODELS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20, help="steps per variant before it is profiled")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--variants", type=_variants, default=["sgd", "dpsgd"], help="comma-separated, in order")
    a = ap.parse_args()
    kept = apply_allocator(a)
    data = load_data(DataConfig(name="mnist1d"))
    n = len(data.y_train)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, n, (a.batch_size,), generator=g) for _ in range(a.steps + a.warmup)]
    profiles: dict[str, PerStep] = {}
    for name in a.variants:
        alg, method = VARIANTS[name]
        torch.manual_seed(0)
        step = flatpriv_step(
            alg, build_model(MODELS[a.model], data.input_shape, data.num_classes), n, a.batch_size, method
        )
        with profile(activities=[ProfilerActivity.CPU]):  # warm-up, the profiler's own included: else the
            for idx in batches[: a.warmup]:  # first variant profiled measured slower, whichever it was
                step(data.x_train[idx], data.y_train[idx])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for idx in batches[a.warmup :]:
                step(data.x_train[idx], data.y_train[idx])
        print(
            f"== {a.model} {name}: {a.steps} steps of batch {a.batch_size} (allocator kept freed memory: {kept}, "
            f"oneDNN primitive cache: {cache_capacity()})"
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=40))
        profiles[name] = per_step(prof.key_averages(), a.steps)
    for before, after in zip(a.variants, a.variants[1:]):
        total = sum(t for t, _ in profiles[after].values()) - sum(t for t, _ in profiles[before].values())
        print(f"== what {after} adds to {before}, per step: {total:.1f} µs of self CPU time in all")
        print(f"{'operator':45s} {'µs added':>9s} {'calls ' + before:>14s} {'calls ' + after:>14s}")
        for key, dt, n0, n1 in added(profiles[before], profiles[after], a.rows):
            print(f"{key[:45]:45s} {dt:9.1f} {n0:14.1f} {n1:14.1f}")


if __name__ == "__main__":
    main()
