"""Pools: K models of one architecture, model k trained on its own random subset S_k, as one vmapped computation.

The K parameter trees are stacked on a leading model axis (``torch.func.stack_module_state``). One step is the
algorithm's gradient pipeline ``vmap``-ed over that axis, with per-model batches gathered from per-model keep
masks and per-model norms for SAM's ε; the descent is one stock ``torch.optim`` optimizer over the stacked
tensors, which is element-wise and therefore exactly K separate optimizers. Model k uses seed ``seed + k`` for
its initialisation and batch order, so it equals ``flatpriv train`` with that seed on subset S_k.

Outputs (feldman.py, lira.py and curvature read them): arrays/keep.npy [K, N] bool, arrays/train_logits.npy
[K, N, C] and arrays/test_logits.npy [K, M, C] (float16), labels, models.jsonl (one summary per model).
Models are trained in chunks; each finished chunk is saved, so a killed pool resumes where it stopped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from .config import Config
from .data import Dataset
from .errors import FlatprivError
from .pool_dp import SUPPORTED as DP_SUPPORTED
from .pool_dp import stacked_models, train_dp_models
from .step import get_algorithm, make_optimizer

POOL_FILE = "pool.json"


def make_keep(n_models: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """keep[k, i] = 1[i ∈ S_k]: every model gets exactly round(fraction · N) examples, drawn independently."""
    if not 0 < fraction < 1:
        raise FlatprivError(f"--keep {fraction}: the kept fraction must be in (0, 1)")
    m = round(fraction * n)
    if m < 1 or m >= n:
        raise FlatprivError(f"--keep {fraction} keeps {m} of {n} examples: every model needs some in and some out")
    rng = np.random.default_rng([seed, 0x9001])
    keep = np.zeros((n_models, n), dtype=bool)
    for k in range(n_models):
        keep[k, rng.permutation(n)[:m]] = True
    return keep


@torch.no_grad()
def _logits(base: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    f = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None))
    return torch.cat([f(params, x[i:i + batch]) for i in range(0, len(x), batch)], dim=1)


def train_models(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                 quiet: bool = True) -> dict[str, Any]:
    """Train len(seeds) models at once, model k on the training positions where ``keep[k]`` is set; DP rows go
    through :func:`flatpriv.pool_dp.train_dp_models` (per-model Poisson batches, noise and ledgers)."""
    alg = get_algorithm(cfg.algorithm)
    check_poolable(cfg.algorithm)
    keep = np.array(keep, dtype=bool)  # a writable copy (arrays sent to a Ray worker arrive read-only)
    extra: dict[str, Any] = {}
    if alg.private:
        r = train_dp_models(cfg, data, keep, seeds, quiet)
        params, base = r.pop("params"), r.pop("base")
        extra = r
    else:
        params, base = _train_plain(cfg, data, keep, seeds, quiet)
    device = data.x_train.device
    train_logits = _logits(base, params, data.x_train, cfg.train.eval_batch_size)
    test_logits = _logits(base, params, data.x_test, cfg.train.eval_batch_size)
    keep_t = torch.as_tensor(keep, device=device)
    correct = (train_logits.argmax(-1) == data.y_train).float()
    return {"params": params, "train_logits": train_logits, "test_logits": test_logits,
            "train_accuracy": ((correct * keep_t).sum(1) / keep_t.sum(1)).cpu().numpy(),
            "test_accuracy": (test_logits.argmax(-1) == data.y_test).float().mean(1).cpu().numpy(), **extra}


def check_poolable(algorithm: str) -> None:
    alg = get_algorithm(algorithm)
    if alg.noisy or (alg.private and algorithm not in DP_SUPPORTED):
        raise FlatprivError(f"pools of {algorithm} are not available yet: pools train sgd, sam, vasso, asam, "
                            f"sharpreg and {', '.join(DP_SUPPORTED)}")


def _train_plain(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                 quiet: bool) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    alg = get_algorithm(cfg.algorithm)
    device = data.x_train.device
    params, base = stacked_models(cfg, data, seeds)
    pipeline = alg.build(cfg, base, None)
    subsets = torch.as_tensor(np.stack([np.flatnonzero(row) for row in keep]), device=device)
    m, bs = subsets.shape[1], cfg.train.batch_size
    steps_per_epoch = math.ceil(m / bs)
    optimizer, scheduler = make_optimizer(cfg, list(params.values()), steps_per_epoch * cfg.train.epochs)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    state = pipeline.init(params)
    for _ in tqdm(range(cfg.train.epochs), desc=f"pool chunk ({len(seeds)} models)", unit="epoch",
                  disable=quiet or None, leave=False):
        perms = torch.stack([torch.randperm(m, generator=g) for g in gens]).to(device)
        order = torch.gather(subsets, 1, perms)  # model k's epoch: its own subset in its own order
        for i in range(0, m, bs):
            idx = order[:, i:i + bs]
            # state leaves that are not tensors yet (VaSSO's d before its first step) are not mapped over
            state_dims = tree_map(lambda v: 0 if isinstance(v, torch.Tensor) else None, state)
            grad = vmap(pipeline.grad, in_dims=(0, state_dims, 0, 0))
            g, state, _ = grad(params, state, data.x_train[idx], data.y_train[idx])
            for name, p in params.items():
                p.grad = g[name]
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return {k: v.detach() for k, v in params.items()}, base
