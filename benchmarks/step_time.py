"""Median wall time of one training step: flatpriv's sgd / sam / vasso / gsam / looksam / friendlysam against a
hand-written SAM loop (swa steps as its base row does: its averaging runs once per epoch).

The hand-written loop is the style users copy today (davda54/sam): perturb ``p.data`` in place, second
forward/backward, restore, ``optimizer.step()``. All variants run in this one process on the same batches.
Prints one JSON object.
Usage: python benchmarks/step_time.py [--steps 300] [--batch-size 128] [--block 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch
import torch.nn.functional as F

from flatpriv.config import DataConfig, ModelConfig, config_from_dict
from flatpriv.data import Dataset, load_data
from flatpriv.models import build_model
from flatpriv.step import ALGORITHMS, take_step

MODELS = {"mlp": ModelConfig(name="mlp", width=256, depth=2), "cnn1d": ModelConfig(name="cnn1d", width=32, depth=3)}


def mnist1d_batches(device: torch.device, batch_size: int, steps: int) -> tuple[Dataset, list]:
    """MNIST-1D on ``device`` and ``steps`` fixed batches of ``batch_size`` drawn with replacement (seed 0): the
    step benchmarks' common input, the same batches for every variant."""
    data = load_data(DataConfig(name="mnist1d"), device)
    g = torch.Generator().manual_seed(0)
    idx = [torch.randint(0, len(data.y_train), (batch_size,), generator=g).to(device) for _ in range(steps)]
    return data, [(data.x_train[i], data.y_train[i]) for i in idx]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_interleaved(
    steps: dict, batches, device, warmup: int, untimed: dict | None = None, block: int = 1
) -> dict[str, list[float]]:
    """Each batch is stepped by every variant in turn, so drift in machine load hits all of them alike; the order
    is shuffled per batch, so no variant always runs right after a memory-hungry one (cold caches).
    ``untimed[name]()``, where given, runs right before that variant's step, outside its timer. With ``block``
    B > 1 each variant steps B batches in a row before the next variant steps the same B (the order shuffled per
    block): after its first step in a block, a variant's weights, gradients and optimizer state were last touched
    by its own previous step, as in a training run, instead of by the other variants' steps."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    rng = random.Random(0)
    for start in range(0, len(batches), block):
        rng.shuffle(order)
        for name in order:
            step = steps[name]
            for i in range(start, min(start + block, len(batches))):
                x, y = batches[i]
                if untimed and name in untimed:
                    untimed[name]()
                _sync(device)
                t = time.perf_counter()
                step(x, y)
                _sync(device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t)
    return times


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of steps")
    return value


def add_timing_flags(ap: argparse.ArgumentParser, steps: int, warmup: int, batch_size: int) -> None:
    """The interleaved step benchmarks' flags: --steps, --warmup, --batch-size, --block (:func:`_time_interleaved`'s
    ``block``) and --device."""
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument(
        "--block",
        type=_positive,
        default=1,
        help="steps each variant takes in a row before the next takes the same batches (1: strict interleaving; "
        "more: each variant's tensors stay as warm as in a training run)",
    )
    ap.add_argument("--device", default="cpu")


def flatpriv_step(algorithm: str, model: torch.nn.Module):
    cfg = config_from_dict({"algorithm": algorithm, "sharpness": {"rho": 0.05, "theta": 0.9}})  # the rows' defaults
    params = dict(model.named_parameters())
    pipe = ALGORITHMS[algorithm].pipeline(cfg, model, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = [pipe.init(params)]

    def step(x, y):
        state[0], _ = take_step(pipe, params, state[0], opt, x, y)

    return step


def handwritten_sam_step(model: torch.nn.Module, rho: float = 0.05):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grad_norm = torch.norm(torch.stack([p.grad.norm(2) for p in model.parameters()]), 2)
        saved = []
        with torch.no_grad():
            for p in model.parameters():
                e = p.grad * (rho / (grad_norm + 1e-12))
                p.add_(e)
                saved.append(e)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, e in zip(model.parameters(), saved):
                p.sub_(e)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_flags(ap, steps=300, warmup=30, batch_size=128)
    ap.add_argument("--rounds", type=int, default=3, help="repetitions with fresh models; the median over all steps")
    a = ap.parse_args()
    device = torch.device(a.device)
    data, batches = mnist1d_batches(device, a.batch_size, a.steps)
    out: dict = {
        "device": str(device),
        "batch_size": a.batch_size,
        "steps": a.steps,
        "block": a.block,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "models": {},
    }
    for mname, mcfg in MODELS.items():
        variants = {
            "sgd": lambda m: flatpriv_step("sgd", m),
            "sam": lambda m: flatpriv_step("sam", m),
            "vasso": lambda m: flatpriv_step("vasso", m),
            "gsam": lambda m: flatpriv_step("gsam", m),
            "looksam": lambda m: flatpriv_step("looksam", m),  # k = 5: one SAM step in five
            "friendlysam": lambda m: flatpriv_step("friendlysam", m),
            "handwritten_sam": handwritten_sam_step,
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(a.rounds):
            steps = {}
            for name, make in variants.items():
                torch.manual_seed(0)
                steps[name] = make(build_model(mcfg, data.input_shape, data.num_classes).to(device))
            for name, t in _time_interleaved(steps, batches, device, a.warmup, block=a.block).items():
                samples[name] += t
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        out["models"][mname] = {
            "median_step_ms": {k: round(v, 4) for k, v in med.items()},
            "sam_over_sgd": round(med["sam"] / med["sgd"], 3),
            "vasso_over_sgd": round(med["vasso"] / med["sgd"], 3),
            **{f"{k}_over_sgd": round(med[k] / med["sgd"], 3) for k in ("gsam", "looksam", "friendlysam")},
            **{f"{k}_over_sam": round(med[k] / med["sam"], 3) for k in ("gsam", "looksam", "friendlysam")},
            "sam_over_handwritten_sam": round(med["sam"] / med["handwritten_sam"], 3),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
