"""Whole DP-SGD runs, flatpriv against Opacus 1.6, on the same data, model, σ, q, steps and epochs, side by side in
one process (Opacus: ``pip install -e '.[bench]'``).

flatpriv: ``flatpriv train --preset dpsgd`` (MNIST-1D 40 000 / 10 000, expected batch 1024, C = 1, SGD lr 0.5
momentum 0.9, ε = 3 by PLD, 15 epochs), with ``--model mlp`` the MLP 2×256. Opacus: the same model and initial
weights at the σ flatpriv calibrated, Poisson rate q and round(1/q) steps per epoch
(:mod:`flatpriv.studies.opacus_reference`), in ``--mode hooks`` and/or ``ghost``. Seeds run in turn, each variant
once per seed (interleaved, so drift in machine load hits all alike). Prints one JSON object: per run accuracy
and seconds: Opacus's are its training loop (sampling and steps); flatpriv's ``train_seconds`` are the same
part of its run, its ``wall_seconds`` the whole run (with the per-epoch evaluation on all 50 000 examples, the
ε after every epoch and the checkpoints). Means, sds, and the ratio of each Opacus mode to flatpriv, for the
training loops (equal work) and for flatpriv's whole run.
Usage: python benchmarks/opacus_dp.py [--model mlp|cnn1d] [--seeds 3] [--mode hooks|ghost|both] [--epochs 15]
[--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from limits import add_allocator_flag, apply_allocator, cache_capacity

from flatpriv.config_io import resolve
from flatpriv.studies.opacus_reference import opacus_dpsgd
from flatpriv.train import train


def _stats(runs: list[dict]) -> dict:
    acc = [r["test_accuracy"] for r in runs]
    wall = [r["wall_seconds"] for r in runs]
    train = [r.get("train_seconds", r["wall_seconds"]) for r in runs]
    return {
        "test_accuracy_mean": statistics.mean(acc),
        "test_accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "wall_seconds_mean": statistics.mean(wall),
        "train_seconds_mean": statistics.mean(train),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn1d"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--mode", default="both", choices=["hooks", "ghost", "both"])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    kept = apply_allocator(a)
    over = ["model.name=mlp", "model.width=256", "model.depth=2"] if a.model == "mlp" else []
    over += [f"train.epochs={a.epochs}", f"train.device={a.device}"]
    modes = ["hooks", "ghost"] if a.mode == "both" else [a.mode]
    out: dict[str, list[dict]] = {"flatpriv": [], **{f"opacus_{m}": [] for m in modes}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            cfg, _ = resolve(preset="dpsgd", overrides=[*over, f"seed={seed}"])
            s = train(cfg, out=tmp, quiet=True)
            out["flatpriv"].append(
                {
                    k: s[k]
                    for k in (
                        "seed",
                        "test_accuracy",
                        "epsilon",
                        "noise_multiplier",
                        "steps",
                        "wall_seconds",
                        "train_seconds",
                    )
                }
            )
            for m in modes:
                out[f"opacus_{m}"].append(opacus_dpsgd(cfg, s["noise_multiplier"], seed, m, device=a.device))
    result = {
        "model": a.model,
        "allocator_kept_freed_memory": kept,
        "onednn_primitive_cache_capacity": cache_capacity(),
        "epochs": a.epochs,
        "device": a.device,
        **{k: _stats(v) for k, v in out.items()},
    }
    for m in modes:
        theirs = result[f"opacus_{m}"]["wall_seconds_mean"]  # their training loop
        result[f"opacus_{m}_over_flatpriv_training"] = theirs / result["flatpriv"]["train_seconds_mean"]
        result[f"opacus_{m}_over_flatpriv_whole_run"] = theirs / result["flatpriv"]["wall_seconds_mean"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
