"""Median wall time of one DP training step: flatpriv's dpsgd (ghost and vmap paths), dpsat, dpsam and sgd
against Opacus 1.6 (``hooks`` and ``ghost`` modes) on the same model and batches, in one process.

Every variant steps the same batches in turn (interleaved), so drift in machine load hits all alike; with
``--block B`` each takes B steps in a row, so its weights and gradients are as warm as in a training run (with
B = 1 every other variant's step runs in between, the vmap path's per-example gradients among them: 80 MB on the MLP).
Against the machine's limit (:mod:`limits`): each variant's FLOPs per step (FlopCounterMode on one step), the FLOP/s its
median step reaches, and the matmul peak for the model's largest layer at this batch (MLP: [B, W] @ [W, W];
1-D CNN: the second conv's im2col [B·10, 5C] @ [5C, C]), so each variant's fraction of peak is printed.
Prints one JSON object. Opacus is a benchmark-only dependency: ``pip install -e '.[bench]'``.
Usage: python benchmarks/dp_step.py [--steps 200] [--batch-size 256] [--block 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch
from limits import add_allocator_flag, apply_allocator, count_flops, matmul_peak, step_header
from step_time import MODELS, _time_interleaved, add_timing_flags, mnist1d_batches

from flatpriv.config import config_from_dict
from flatpriv.models import build_model
from flatpriv.privacy import PrivateRun, Privatizer
from flatpriv.privacy.accounting import Ledger
from flatpriv.privacy.sampling import make_generator
from flatpriv.step import ALGORITHMS, take_step


def flatpriv_step(
    algorithm: str, model: torch.nn.Module, n: int, batch: int, clip_method: str = "auto", with_state: bool = False
):
    """A step function ``step(x, y)`` for the row; ``with_state``: also ``view() -> (params, pipeline state)``."""
    cfg = config_from_dict(
        {
            "algorithm": algorithm,
            "sharpness": {"rho": 0.03},
            "privacy": {"noise_multiplier": 1.0, "clip_norm": 1.0, "clip_method": clip_method},
        }
    )
    q = batch / n
    priv = PrivateRun(
        q,
        1.0,
        round(1 / q),
        Privatizer(1.0, q, batch, make_generator(0), Ledger()),
        make_generator(1),
        "pld",
        1e-5,
        kind="dp",
    )
    params = dict(model.named_parameters())
    pipe = ALGORITHMS[algorithm].pipeline(cfg, model, priv if ALGORITHMS[algorithm].private else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    state = [pipe.init(params)]

    def step(x, y):
        state[0], _ = take_step(pipe, params, state[0], opt, x, y)

    return (step, lambda: (params, state[0])) if with_state else step


def opacus_step(model: torch.nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, batch: int, mode: str):
    from opacus import PrivacyEngine

    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_all, y_all), batch_size=batch)
    engine = PrivacyEngine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode=mode,
            criterion=torch.nn.CrossEntropyLoss(),
        )
    module, optimizer = out[0], out[1]
    criterion = out[2] if mode == "ghost" else torch.nn.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad()
        loss = criterion(module(x), y)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_allocator_flag(ap)
    add_timing_flags(ap, steps=200, warmup=20, batch_size=256)
    a = ap.parse_args()
    kept = apply_allocator(a)
    warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook).*")
    device = torch.device(a.device)
    data, batches = mnist1d_batches(device, a.batch_size, a.steps)
    n = len(data.y_train)
    try:
        import opacus

        opacus_version: str | None = opacus.__version__
    except ImportError:
        opacus_version = None
    out: dict = {**step_header(a, kept, opacus=opacus_version), "models": {}}
    for mname, mcfg in MODELS.items():

        def fresh(mcfg=mcfg) -> torch.nn.Module:
            torch.manual_seed(0)
            return build_model(mcfg, data.input_shape, data.num_classes).to(device)

        steps = {
            "sgd": flatpriv_step("sgd", fresh(), n, a.batch_size),
            "dpsgd_ghost": flatpriv_step("dpsgd", fresh(), n, a.batch_size, "ghost"),
            "dpsgd_vmap": flatpriv_step("dpsgd", fresh(), n, a.batch_size, "vmap"),
            "dpsat": flatpriv_step("dpsat", fresh(), n, a.batch_size),
            "dpsam": flatpriv_step("dpsam", fresh(), n, a.batch_size),
        }
        if opacus_version:
            for mode in ("hooks", "ghost"):
                steps[f"opacus_{mode}"] = opacus_step(fresh(), data.x_train, data.y_train, a.batch_size, mode)
        x0, y0 = batches[0]
        for step in steps.values():  # the first step of a ghost oracle also checks it against autograd, once
            step(x0, y0)
        flops = {k: count_flops(lambda step=step, x=x0, y=y0: step(x, y)) for k, step in steps.items()}
        times = _time_interleaved(steps, batches, device, a.warmup, block=a.block)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        if mname == "mlp":
            peak = matmul_peak(1, a.batch_size, mcfg.width, mcfg.width, a.device)
        else:
            peak = matmul_peak(1, a.batch_size * 10, mcfg.width * 5, mcfg.width, a.device)
        row: dict = {
            "median_step_ms": {k: round(v, 4) for k, v in med.items()},
            "dpsgd_over_sgd": round(med["dpsgd_ghost"] / med["sgd"], 3),
            "dpsgd_vmap_over_sgd": round(med["dpsgd_vmap"] / med["sgd"], 3),
            "dpsat_over_dpsgd": round(med["dpsat"] / med["dpsgd_ghost"], 3),
            "dpsam_over_dpsgd": round(med["dpsam"] / med["dpsgd_ghost"], 3),
            "flops_per_step": flops,
            "matmul_peak": peak,
            "fraction_of_peak": {k: round(flops[k] / (med[k] / 1e3) / peak["flop_per_s"], 4) for k in med},
        }
        if opacus_version:
            best = min(med["opacus_hooks"], med["opacus_ghost"])
            row.update(
                {
                    "opacus_hooks_over_sgd": round(med["opacus_hooks"] / med["sgd"], 3),
                    "opacus_ghost_over_sgd": round(med["opacus_ghost"] / med["sgd"], 3),
                    "speedup_vs_faster_opacus": round(best / med["dpsgd_ghost"], 3),
                }
            )
        out["models"][mname] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
