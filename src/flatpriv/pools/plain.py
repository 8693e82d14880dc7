"""Pools: K models of one architecture, model k trained on its own random subset S_k, as one vmapped computation.

The K parameter trees are stacked on a leading model axis (``torch.func.stack_module_state``). One step is the
algorithm's gradient pipeline ``vmap``-ed over that axis, with per-model batches gathered from per-model keep
masks and per-model norms for SAM's ε; the descent is one stock ``torch.optim`` optimizer over the stacked
tensors, which is element-wise and therefore exactly K separate optimizers. Model k uses seed ``seed + k`` for
its initialisation and batch order, so it equals ``flatpriv train`` with that seed on subset S_k.

Outputs (feldman.py, lira.py and curvature read them): arrays/keep.npy [K, N] bool, arrays/train_logits.npy
[K, N, C] and arrays/test_logits.npy [K, M, C] (float32), labels, models.jsonl (one summary per model).
Models are trained in chunks; each finished chunk is saved, so a killed pool resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config
from ..data import Dataset
from ..data import augment as aug
from ..errors import FlatprivError
from ..privacy.privatizer import setup_privacy
from ..privacy.sampling import standard_normal
from ..step import get_algorithm, make_optimizer
from ..step.averaging import PoolAverage
from .dp import train_dp_models
from .stack import model_generators, pool_grad, pool_logits, stacked_models
from .steps import BatchStream, descend, lr_table, vmap_models


def train_models(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int], quiet: bool = True) -> dict[str, Any]:
    """Train len(seeds) models at once, model k on the training positions where ``keep[k]`` is set; DP rows go
    through :func:`flatpriv.pools.dp.train_dp_models` (per-model Poisson batches, noise and ledgers)."""
    alg = get_algorithm(cfg.algorithm)
    keep = np.array(keep, dtype=bool)  # a writable copy (arrays sent to a Ray worker arrive read-only)
    extra: dict[str, Any] = {}
    if alg.private:
        r = train_dp_models(cfg, data, keep, seeds, quiet)
        params, base = r.pop("params"), r.pop("base")
        extra = r
    else:
        params, base = _train_plain(cfg, data, keep, seeds, quiet)
    device = data.x_train.device
    train_logits = pool_logits(base, params, data.x_train, cfg.train.eval_batch_size)
    test_logits = pool_logits(base, params, data.x_test, cfg.train.eval_batch_size)
    views = aug.query_views(cfg.augment, data.input_shape)
    if views:  # the attacks' query augmentation: logits [K, V, N, C] on each fixed view of the examples
        pad, eb = cfg.augment.crop_padding, cfg.train.eval_batch_size
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            extra[f"{split}_logits_views"] = torch.stack(
                [pool_logits(base, params, aug.view(x, *v, pad), eb) for v in views], dim=1
            )
        extra["query_views"] = np.array(views, dtype=np.int64)
    keep_t = torch.as_tensor(keep, device=device)
    correct = (train_logits.argmax(-1) == data.y_train).float()
    return {
        "params": params,
        "train_logits": train_logits,
        "test_logits": test_logits,
        "train_accuracy": ((correct * keep_t).sum(1) / keep_t.sum(1)).cpu().numpy(),
        "test_accuracy": (test_logits.argmax(-1) == data.y_test).float().mean(1).cpu().numpy(),
        **extra,
    }


def check_plain(cfg: Config, keep: np.ndarray) -> None:
    """Refuse, before anything is written, a plain pool whose row cannot be reproduced model by model: a bad
    ``swa.base``, or GSAM's lr-following ρ when the models' step counts differ (Bernoulli masks)."""
    alg = get_algorithm(cfg.algorithm)
    if alg.averages:
        alg.pipeline(cfg, torch.nn.Identity(), total_steps=1)  # builds the base row's pipeline: refuses a bad swa.base
    steps = {int(np.ceil(m / cfg.train.batch_size)) for m in np.asarray(keep).sum(1)}
    if cfg.sharpness.rho_schedule == "lr" and len(steps) > 1:
        raise FlatprivError(
            "sharpness.rho_schedule = 'lr' in a pool needs every model to take the same number of steps "
            "(exact keep masks, --keep-mode exact): GSAM's ρ_t is one value per step for the whole pool"
        )


def _weighted_cross_entropy(logits: torch.Tensor, yw: torch.Tensor) -> torch.Tensor:
    """Σ w_i ℓ_i / Σ w_i with labels yw[:, 0] and 0/1 weights yw[:, 1]: the mean over a padded batch's real rows."""
    w = yw[:, 1].to(logits.dtype)
    return (F.cross_entropy(logits, yw[:, 0], reduction="none") * w).sum() / w.sum().clamp(min=1.0)


def _train_plain(
    cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int], quiet: bool
) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """Non-private rows and Noisy-SGD. Model k's noise N(0, (σ/B)²I) is drawn outside the vmap from its own
    generator (noise seed noise_seed + 2k, as in DP pools), leaf by leaf in the order a single run draws it."""
    alg = get_algorithm(cfg.algorithm)
    check_plain(cfg, keep)
    device = data.x_train.device
    params, base = stacked_models(cfg, data, seeds)
    noisy = alg.noisy
    if noisy:  # refusals (e.g. a target ε for noisy_sgd) exactly as a single run
        setup_privacy(cfg, alg, int(keep.sum(1).min()), device)
        alg = get_algorithm("sgd")
    bs = cfg.train.batch_size
    stream = BatchStream(
        [np.flatnonzero(row) for row in keep], bs, cfg.train.epochs, [torch.Generator().manual_seed(s) for s in seeds]
    )
    steps = max(stream.totals)  # the same for every model whenever a row's pipeline reads it (check_plain)
    pipelines = [
        alg.pipeline(cfg, base, total_steps=steps),
        alg.pipeline(cfg, base, loss_fn=_weighted_cross_entropy, total_steps=steps),
    ]
    average = PoolAverage(cfg, params, stream.steps_per_epoch) if alg.averages else None
    lrs = lr_table(cfg, stream.totals)
    optimizer, _ = make_optimizer(cfg, list(params.values()), 1)
    gens = model_generators(cfg, seeds, device) if noisy else []
    std = cfg.privacy.noise_multiplier / bs
    template = {n: v[0].detach() for n, v in params.items()}
    state = pipelines[0].init(params)
    vectorized = vmap_models(base, device)
    model_seeds = torch.tensor(seeds, device=device)[:, None]  # model k's augmentation is its single run's
    block = max(stream.steps_per_epoch)
    total = lrs.shape[1]
    for t0 in tqdm(
        range(0, total, block),
        desc=f"pool chunk ({len(seeds)} models)",
        unit="epoch",
        disable=quiet or None,
        leave=False,
    ):
        steps = min(block, total - t0)
        pos = stream.block(steps)
        counts = (pos >= 0).sum(2)
        pos = pos.to(device)
        for j in range(steps):
            c = counts[:, j]
            if (c == c[0]).all():  # every model has a full (or the same short) batch: the plain mean
                idx = pos[:, j, : int(c[0])]
                x, y, pipe = aug.batch(data, idx, cfg.augment, model_seeds, t0 + j), aug.labels(data, idx), pipelines[0]
            else:  # batches of different sizes: padded rows get weight 0
                real = pos[:, j] >= 0
                idx = pos[:, j].clamp(min=0)
                x, pipe = aug.batch(data, idx, cfg.augment, model_seeds, t0 + j), pipelines[1]
                y = torch.stack([aug.labels(data, idx), real.long()], dim=-1)
            # detached: under torch.func a gradient of parameters that require grad keeps its graph, and a state
            # built from it (VaSSO's d) would hold every step's graph (a pool of 128 VaSSO models grew to 24 GB)
            g, state = pool_grad(pipe.grad, vectorized, {n: v.detach() for n, v in params.items()}, state, x, y)
            if noisy:
                draws = [standard_normal(template, gen) for gen in gens]
                g = {n: v + std * torch.stack([d[n] for d in draws]) for n, v in g.items()}
            descend(optimizer, params, g, lrs[:, t0 + j])
            if average is not None:
                average.after_step(t0 + j, params)
    if average is not None:  # SWA: the pool's models are the averages, as a single run saves its average
        return average.averaged(), base
    return {k: v.detach() for k, v in params.items()}, base
