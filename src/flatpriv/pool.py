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

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from .config import Config
from .data import Dataset
from .errors import FlatprivError
from .pool_dp import SUPPORTED as DP_SUPPORTED
from .pool_dp import model_generators, stacked_models, train_dp_models
from .pool_steps import BatchStream, descend, lr_table, vmap_models
from .private import setup_privacy
from .step import get_algorithm, make_optimizer

POOL_FILE = "pool.json"
KEEP_MODES = ("exact", "bernoulli")


def make_keep(n_models: int, n: int, fraction: float, seed: int, mode: str = "exact") -> np.ndarray:
    """keep[k, i] = 1[i ∈ S_k], drawn independently per model.

    ``exact``: every model gets exactly round(fraction · N) examples. ``bernoulli``: every example joins S_k
    independently with probability ``fraction``, so |S_k| ~ Binomial(N, fraction) (LiRA's setting; the models
    then take different numbers of steps, see :mod:`flatpriv.pool_steps`).
    """
    if not 0 < fraction < 1:
        raise FlatprivError(f"--keep {fraction}: the kept fraction must be in (0, 1)")
    if mode not in KEEP_MODES:
        raise FlatprivError(f"--keep-mode {mode}: must be one of {', '.join(KEEP_MODES)}")
    if mode == "bernoulli":
        keep = np.random.default_rng([seed, 0xBE27]).random((n_models, n)) < fraction
        sizes = keep.sum(1)
        if sizes.min() < 1 or sizes.max() >= n:
            raise FlatprivError(f"--keep-mode bernoulli gave a model {sizes.min() if sizes.min() < 1 else n} of "
                                f"{n} examples: every model needs some in and some out (move --keep away from 0 and 1)")
        return keep
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
    """[K, n, C] logits, one model at a time: on a CPU twice as fast as a vmap over models (measured for the MLP
    and the 1-D CNN), since every model sees the same inputs and nothing is gained by batching the weights."""
    k_models = next(iter(params.values())).shape[0]
    return torch.stack([torch.cat([functional_call(base, {n: v[k] for n, v in params.items()}, (x[i:i + batch],))
                                   for i in range(0, len(x), batch)]) for k in range(k_models)])


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
    if alg.private and algorithm not in DP_SUPPORTED:
        raise FlatprivError(f"pools of {algorithm} are not available yet: private pools train "
                            f"{', '.join(DP_SUPPORTED)}")


def _weighted_cross_entropy(logits: torch.Tensor, yw: torch.Tensor) -> torch.Tensor:
    """Σ w_i ℓ_i / Σ w_i with labels yw[:, 0] and 0/1 weights yw[:, 1]: the mean over a padded batch's real rows."""
    w = yw[:, 1].to(logits.dtype)
    return (F.cross_entropy(logits, yw[:, 0], reduction="none") * w).sum() / w.sum().clamp(min=1.0)


def _one_at_a_time(pipe: Any, params: dict[str, torch.Tensor], state: Any, x: torch.Tensor,
                   y: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    """The same step as the vmap, one model at a time (see :func:`flatpriv.pool_steps.vmap_models`)."""
    def part(k: int) -> Any:
        return tree_map(lambda v: v[k] if isinstance(v, torch.Tensor) else v, state)

    outs = [pipe.grad({n: v[k] for n, v in params.items()}, part(k), x[k], y[k]) for k in range(len(x))]
    g = {n: torch.stack([o[0][n] for o in outs]) for n in params}
    stacked = tree_map(lambda *vs: torch.stack(vs) if isinstance(vs[0], torch.Tensor) else vs[0], *[o[1] for o in outs])
    return g, stacked


def _train_plain(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                 quiet: bool) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """Non-private rows and Noisy-SGD. Model k's noise N(0, (σ/B)²I) is drawn outside the vmap from its own
    generator (noise seed noise_seed + 2k, as in DP pools), leaf by leaf in the order a single run draws it."""
    alg = get_algorithm(cfg.algorithm)
    device = data.x_train.device
    params, base = stacked_models(cfg, data, seeds)
    noisy = alg.noisy
    if noisy:  # refusals (e.g. a target ε for noisy_sgd) exactly as a single run
        setup_privacy(cfg, False, 0, True, int(keep.sum(1).min()), device)
        alg = get_algorithm("sgd")
    pipelines = [alg.pipeline(cfg, base), alg.pipeline(cfg, base, loss_fn=_weighted_cross_entropy)]
    bs = cfg.train.batch_size
    stream = BatchStream([np.flatnonzero(row) for row in keep], bs, cfg.train.epochs,
                         [torch.Generator().manual_seed(s) for s in seeds])
    lrs = lr_table(cfg, stream.totals)
    optimizer, _ = make_optimizer(cfg, list(params.values()), 1)
    gens = model_generators(cfg, seeds, device) if noisy else []
    std = cfg.privacy.noise_multiplier / bs
    state = pipelines[0].init(params)
    vectorized = vmap_models(base, device)
    block = max(stream.steps_per_epoch)
    total = lrs.shape[1]
    for t0 in tqdm(range(0, total, block), desc=f"pool chunk ({len(seeds)} models)", unit="epoch",
                   disable=quiet or None, leave=False):
        steps = min(block, total - t0)
        pos = stream.block(steps)
        counts = (pos >= 0).sum(2)
        pos = pos.to(device)
        for j in range(steps):
            c = counts[:, j]
            if (c == c[0]).all():  # every model has a full (or the same short) batch: the plain mean
                idx = pos[:, j, :int(c[0])]
                x, y, pipe = data.x_train[idx], data.y_train[idx], pipelines[0]
            else:  # batches of different sizes: padded rows get weight 0
                real = pos[:, j] >= 0
                idx = pos[:, j].clamp(min=0)
                x, pipe = data.x_train[idx], pipelines[1]
                y = torch.stack([data.y_train[idx], real.long()], dim=-1)
            if vectorized:
                # state leaves that are not tensors yet (VaSSO's d before its first step) are not mapped over
                state_dims = tree_map(lambda v: 0 if isinstance(v, torch.Tensor) else None, state)
                g, state, _ = vmap(pipe.grad, in_dims=(0, state_dims, 0, 0))(params, state, x, y)
            else:
                g, state = _one_at_a_time(pipe, params, state, x, y)
            if noisy:
                draws = [{n: torch.randn(v.shape[1:], generator=gen, device=device, dtype=v.dtype)
                          for n, v in g.items()} for gen in gens]
                g = {n: v + std * torch.stack([d[n] for d in draws]) for n, v in g.items()}
            descend(optimizer, params, g, lrs[:, t0 + j])
    return {k: v.detach() for k, v in params.items()}, base
