"""DP-SGD over SGD across batch sizes: how much of the gap is a fixed cost per step and how much grows with the batch.

At each batch size B (``--batch-sizes``), SGD and DP-SGD (ghost clipping, σ = 1, C = 1) step the same batches of
MNIST-1D in turn (interleaved, shuffled order per batch, as ``dp_step.py`` does), and the median step time t(B) of
each is fitted by least squares (``numpy.polyfit``) to a line

    t(B) = t₀ + B · t₁        (t₀: the step's fixed cost in ms; t₁: its cost per example in µs).

Then at the last batch size B* (the expected batch of every other benchmark, 256), DP-SGD's extra time over SGD
splits into a fixed part and a per-example part:

    DP/SGD − 1 = (t₀,dp − t₀,sgd) / t_sgd(B*)  +  B* (t₁,dp − t₁,sgd) / t_sgd(B*)
               =     fixed_share                +      per_example_share

The fixed part is what the step's extra kernels cost whatever the batch (their launches, the noise draw of every
parameter, the clip factors, the privatization); the per-example part is the per-example norms and the clipped
sum's work minus the weight gradient SGD computes and DP-SGD does not. A target of DP/SGD ≤ 1.3 needs the two
shares together ≤ 0.3; either share alone above 0.3 rules the target out unless the other turns negative.
``residual_ms`` says how far the medians lie from the line (the fit is a description, not a model).
Prints one JSON object. Usage: python benchmarks/dp_batch.py [--model mlp|cnn1d|all]
[--batch-sizes 32,64,128,192,256] [--steps 200] [--warmup 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch
from dp_step import flatpriv_step
from limits import add_allocator_flag, apply_allocator, cache_capacity
from step_time import MODELS, _time_interleaved

from flatpriv.config import DataConfig
from flatpriv.data import load_data
from flatpriv.models import build_model

VARIANTS = {"sgd": ("sgd", "auto"), "dpsgd": ("dpsgd", "ghost")}


def split_gap(sizes: list[int], sgd_ms: list[float], dp_ms: list[float]) -> dict:
    """Fit t(B) = t₀ + B·t₁ to each variant's medians and split DP/SGD − 1 at the last size into the fixed and
    per-example shares (module docstring). Pure: the benchmark's numbers in, the decomposition out."""
    b = np.asarray(sizes, dtype=float)
    fits = {}
    for name, ms in (("sgd", sgd_ms), ("dpsgd", dp_ms)):
        slope, intercept = np.polyfit(b, np.asarray(ms, dtype=float), 1)
        fits[name] = {
            "fixed_ms": round(float(intercept), 4),
            "per_example_us": round(float(slope) * 1e3, 4),
            "residual_ms": round(float(np.max(np.abs(intercept + slope * b - np.asarray(ms)))), 4),
        }
    at, sgd_at = sizes[-1], sgd_ms[-1]
    fixed = (fits["dpsgd"]["fixed_ms"] - fits["sgd"]["fixed_ms"]) / sgd_at
    per_example = at * (fits["dpsgd"]["per_example_us"] - fits["sgd"]["per_example_us"]) / 1e3 / sgd_at
    return {
        "fit": fits,
        "at_batch_size": at,
        "dpsgd_over_sgd": round(dp_ms[-1] / sgd_at, 3),
        "fixed_share": round(fixed, 3),
        "per_example_share": round(per_example, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="all", choices=["all", *MODELS])
    ap.add_argument(
        "--batch-sizes",
        default="32,64,128,192,256",
        help="comma-separated; the last one is where the gap is split (below about 32 the kernels run on one thread, "
        "another regime: add 1 to see it, not to fit it)",
    )
    ap.add_argument("--steps", type=int, default=200, help="timed steps per batch size (after --warmup)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    if len(sizes) < 2 or min(sizes) < 1:
        ap.error("--batch-sizes needs at least two sizes, each >= 1")
    kept = apply_allocator(a)
    device = torch.device(a.device)
    data = load_data(DataConfig(name="mnist1d"), device)
    n = len(data.y_train)
    out: dict = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps_per_size": a.steps,
        "allocator_kept_freed_memory": kept,
        "onednn_primitive_cache_capacity": cache_capacity(),
        "models": {},
    }
    for mname in MODELS if a.model == "all" else [a.model]:
        medians: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for size in sizes:
            g = torch.Generator().manual_seed(size)
            idx = [torch.randint(0, n, (size,), generator=g).to(device) for _ in range(a.steps + a.warmup)]
            steps = {}
            for name, (alg, method) in VARIANTS.items():
                torch.manual_seed(0)
                model = build_model(MODELS[mname], data.input_shape, data.num_classes).to(device)
                # q from the expected batch 256 whatever B: the step's work depends on B, not on q
                steps[name] = flatpriv_step(alg, model, n, 256, method)
            times = _time_interleaved(steps, [(data.x_train[i], data.y_train[i]) for i in idx], device, a.warmup)
            for name, t in times.items():
                medians[name].append(statistics.median(t) * 1e3)
        row = split_gap(sizes, medians["sgd"], medians["dpsgd"])
        row["median_step_ms"] = {name: {str(s): round(v, 4) for s, v in zip(sizes, ms)} for name, ms in medians.items()}
        row["dpsgd_extra_ms"] = {str(s): round(d - t, 4) for s, d, t in zip(sizes, medians["dpsgd"], medians["sgd"])}
        out["models"][mname] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
