"""Opacus 1.6 DP-SGD on the same MNIST-1D data and model as ``flatpriv train --preset dpsgd``, for a same-machine
accuracy comparison (benchmark-only: ``pip install -e '.[bench]'``).

Poisson sampling with expected batch 1024 of 40 000 examples, 15 epochs, C = 1, SGD lr 0.5 momentum 0.9, and the
noise multiplier σ flatpriv calibrates for ε = 3 (PLD), so both spend the same privacy. Prints one JSON object.
Usage: python benchmarks/opacus_dp.py [--model mlp|cnn1d] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.models import build_model
from flatpriv.privacy.accounting import calibrate_noise


def run(model_name: str, seed: int) -> dict:
    from opacus import PrivacyEngine

    over = ["model.width=256", "model.depth=2"] if model_name == "mlp" else []
    cfg, _ = resolve(preset="dpsgd", overrides=[f"model.name={model_name}", *over])
    data = load_data(cfg.data)
    n = len(data.y_train)
    q = cfg.train.batch_size / n
    steps = round(1 / q) * cfg.train.epochs
    sigma = calibrate_noise(cfg.privacy.target_epsilon, q, steps, cfg.privacy.delta, "pld")
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=cfg.train.batch_size
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, loader = PrivacyEngine().make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=sigma, max_grad_norm=cfg.privacy.clip_norm
        )
        for _ in range(cfg.train.epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return {"seed": seed, "test_accuracy": acc, "noise_multiplier": sigma, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn1d"])
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    runs = [run(a.model, s) for s in range(a.seeds)]
    acc = [r["test_accuracy"] for r in runs]
    print(
        json.dumps(
            {
                "model": a.model,
                "runs": runs,
                "test_accuracy_mean": statistics.mean(acc),
                "test_accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            }
        )
    )


if __name__ == "__main__":
    main()
