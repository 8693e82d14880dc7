"""The dp-sat study's time measurement: one training step of each DP row, interleaved on the same batches.

Pool wall times on a shared machine drift with whatever else runs, so the claims' time parts come from here: for
one model per row (the arm's model, expected batch B, the study's C and ρ; σ = 1, which costs nothing extra) the
same ``warmup + steps`` batches are stepped by every row in turn, in a shuffled order per batch, so a change in
machine load hits every row alike. A step is what a training run does: clipped per-example gradients, the row's
ascent, the noise, ``optimizer.step()``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import torch

from ..config_io import resolve
from ..models import synchronize
from ..step import take_step
from ..train import prepare
from .dp_sat import ALGORITHMS, arms, overrides
from .runner import Context


def timing_stage(arm: str) -> Callable[[Context], dict[str, Any]]:
    """Per-step wall seconds of every DP row on this arm's model (lists, one entry per timed batch)."""

    def run(ctx: Context) -> dict[str, Any]:
        s = ctx.settings
        setups = {}
        for alg in ALGORITHMS:
            over = overrides(s, arms(s)[arm], alg, s["epsilons"][0])
            over += ["privacy.target_epsilon=0", "privacy.noise_multiplier=1.0", f"train.device={ctx.device}"]
            setups[alg] = prepare(resolve(preset="dpsgd", overrides=over)[0])
        data = setups["dpsgd"].data
        device = data.x_train.device
        params = {a: dict(st.model.named_parameters()) for a, st in setups.items()}
        states = {a: st.pipeline.init(params[a]) for a, st in setups.items()}
        gen = torch.Generator().manual_seed(s["seed"])
        rng = random.Random(s["seed"])
        order = list(ALGORITHMS)
        times: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
        for i in range(s["timing_warmup"] + s["timing_steps"]):
            idx = torch.randint(0, len(data.y_train), (s["batch_size"],), generator=gen).to(device)
            x, y = data.x_train[idx], data.y_train[idx]
            rng.shuffle(order)
            for alg in order:
                st = setups[alg]
                synchronize(device)
                t0 = time.perf_counter()
                states[alg], _ = take_step(st.pipeline, params[alg], states[alg], st.optimizer, x, y)
                synchronize(device)
                if i >= s["timing_warmup"]:
                    times[alg].append(time.perf_counter() - t0)
        return {"step_seconds": times, "batch": s["batch_size"], "threads": torch.get_num_threads()}

    return run
