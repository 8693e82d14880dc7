"""DP pools: K private models at once, each with its own Poisson batches, noise, generators and ledger.

The step is the single run's: :meth:`flatpriv.step.Algorithm.dp_core` of the row, run over the model axis by
:func:`flatpriv.pools.stack.pool_grad`, so any DP row of the algorithm table trains as a pool with nothing to add
here. What a pool adds is outside the step: model k samples its batch from its own subset S_k with rate
q_k = batch_size / |S_k| (batches padded to the widest with weight-0 rows), its draws z come from its own generator
in a single run's order, and its ledger records the row's releases for each step model k is still active.

The clipped sums come from ghost clipping built from function transforms (:mod:`flatpriv.privacy.ghost_pool`) when
the step is one vmap, or from the single run's oracle on each model's real rows when the pool steps one model at
a time (convolutional models on a CPU, see :func:`flatpriv.pools.steps.vmap_models`; or a model the ghost rules do
not cover). Model k therefore equals ``flatpriv train`` on S_k with ``privacy.noise_seed = noise_seed + 2k``.
With exact keep masks all models share σ, q and the number of steps, so their ledgers and ε are equal; with
Bernoulli masks each model has the (q_k, σ_k, T_k) and the ε_k of its own single run (σ_k calibrated per subset
size when a target ε is given).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data import Dataset
from ..data import augment as aug
from ..privacy.accounting import Ledger, epsilon_from_ledger
from ..privacy.clipping import clipped_grad, supports_ghost
from ..privacy.ghost_pool import weighted_clipped_sum
from ..privacy.privatizer import Noise, PrivateRun, setup_privacy
from ..privacy.sampling import Source, poisson_indices, standard_normal
from ..step import Algorithm, get_algorithm, make_optimizer
from ..step.dp import ClipFn
from .stack import model_generators, pool_grad, stacked_models
from .steps import descend, lr_table, vmap_models

Tree = dict[str, torch.Tensor]


def _clip_fn(base: torch.nn.Module, cfg: Config, vectorized: bool) -> ClipFn:
    """``clip(params, x [B, ...], yw [B, 2]) -> (Σ_i w_i·clip_C(∇ℓ_i), mean loss)`` for one model, with labels
    ``yw[:, 0]`` and 0/1 weights ``yw[:, 1]`` (the real rows come first)."""
    c = cfg.privacy
    if vectorized:
        clip = weighted_clipped_sum(base, c.clip_norm)

        def weighted(params: Tree, x: torch.Tensor, yw: torch.Tensor) -> tuple[Tree, torch.Tensor]:
            w = yw[:, 1].to(x.dtype)
            s, loss = clip(params, x, yw[:, 0], w)
            return s, loss / w.sum().clamp(min=1.0)

        return weighted
    oracle = clipped_grad(base, c.clip_norm, c.clip_method, cfg.augment.multiplicity)

    def real_rows(params: Tree, x: torch.Tensor, yw: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        n = int(yw[:, 1].sum())
        s, info = oracle(params, x[:n], yw[:n, 0])
        return s, info.loss

    return real_rows


def _setups(cfg: Config, alg: Algorithm, sizes: list[int], device: torch.device) -> dict[int, PrivateRun]:
    """The single run's privacy set-up (q, σ, steps per epoch) for each distinct subset size; σ is calibrated
    once per size when a target ε is given."""
    return {m: setup_privacy(cfg, alg, m, device) for m in sorted(set(sizes))}  # type: ignore[misc]


def _noise(
    template: Tree,
    gens: list[Source],
    active: list[bool],
    releases: int,
    std: torch.Tensor,
    divisor: torch.Tensor,
) -> Noise:
    """Model k's ``releases`` draws from its own generator (zeros for a finished model, which draws nothing)."""
    per_model = [
        [
            standard_normal(template, g) if on else {n: torch.zeros_like(v) for n, v in template.items()}
            for _ in range(releases)
        ]
        for g, on in zip(gens, active)
    ]
    z = tuple({n: torch.stack([m[r][n] for m in per_model]) for n in template} for r in range(releases))
    return Noise(z, std, divisor)


def _poisson_batches(
    subsets: torch.Tensor, sizes: list[int], q: list[float], samplers: list[Source], active: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model k's Poisson sample of its subset (rate q_k, from its own sampler as its single run draws it), as
    training positions [K, B] padded to the widest batch, and a 0/1 mask [K, B] of the real rows."""
    device = subsets.device
    picks = [
        poisson_indices(m, qk, g).to(device) if on else torch.empty(0, dtype=torch.long, device=device)
        for m, qk, g, on in zip(sizes, q, samplers, active)
    ]
    width = max(1, max(len(p) for p in picks))
    pos = torch.zeros(len(picks), width, dtype=torch.long, device=device)
    real = torch.zeros(len(picks), width, dtype=torch.long, device=device)
    for k, p in enumerate(picks):
        pos[k, : len(p)], real[k, : len(p)] = p, 1
    return torch.gather(subsets, 1, pos), real


def train_dp_models(
    cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int], quiet: bool = True
) -> dict[str, Any]:
    """Train one private model per row of ``keep``; returns the stacked weights and each model's privacy record."""
    alg = get_algorithm(cfg.algorithm)
    device = data.x_train.device
    sizes = [int(row.sum()) for row in keep]
    k_models, width = len(sizes), max(sizes)
    subsets = torch.zeros(k_models, width, dtype=torch.long, device=device)
    for k, row in enumerate(keep):
        subsets[k, : sizes[k]] = torch.as_tensor(np.flatnonzero(row), device=device)
    runs = _setups(cfg, alg, sizes, device)
    q = [runs[m].sample_rate for m in sizes]
    sigma = [runs[m].noise_multiplier for m in sizes]
    totals = [runs[m].steps_per_epoch * cfg.train.epochs for m in sizes]
    std = torch.tensor([s * cfg.privacy.clip_norm for s in sigma], device=device)
    divisor = torch.tensor([qk * m for qk, m in zip(q, sizes)], device=device)  # expected batch size q_k·|S_k|
    params, base = stacked_models(cfg, data, seeds)
    vectorized = (
        vmap_models(base, device)
        and cfg.privacy.clip_method != "vmap"
        and supports_ghost(base)
        and cfg.augment.multiplicity == 1  # the pool's ghost rules see rows, not an example's K copies
    )
    pipe = alg.dp_core(cfg, _clip_fn(base, cfg, vectorized))
    lrs = lr_table(cfg, totals)
    optimizer, _ = make_optimizer(cfg, list(params.values()), 1)
    noise_gens, samplers = model_generators(cfg, seeds, device), model_generators(cfg, seeds, device, sampler=True)
    ledgers = [Ledger() for _ in sizes]
    template = {n: v[0].detach() for n, v in params.items()}
    state = pipe.init(params)
    model_seeds = torch.tensor(seeds, device=device)[:, None]  # model k's augmentation is its single run's
    for t in tqdm(
        range(lrs.shape[1]), desc=f"DP pool chunk ({k_models} models)", unit="step", disable=quiet or None, leave=False
    ):
        active = [t < total for total in totals]  # a finished model samples, draws and releases nothing more
        idx, real = _poisson_batches(subsets, sizes, q, samplers, active)
        yw = torch.stack([aug.labels(data, idx), real], dim=-1)
        noise = _noise(template, noise_gens, active, pipe.releases, std, divisor)
        g, state = pool_grad(
            pipe.grad,
            vectorized,
            {n: v.detach() for n, v in params.items()},
            state,
            aug.batch(data, idx, cfg.augment, model_seeds, t),
            yw,
            noise,
        )
        for k in range(k_models):
            if active[k]:
                ledgers[k].record(sigma[k], q[k], pipe.releases)
        descend(optimizer, params, g, lrs[:, t])
    epsilons: dict[tuple, float] = {}  # equal ledgers (all of them, with exact keep masks) are accounted once
    for ledger in ledgers:
        if tuple(ledger.entries) not in epsilons:
            epsilons[tuple(ledger.entries)] = epsilon_from_ledger(ledger, cfg.privacy.delta, cfg.privacy.accountant)
    return {
        "params": {k: v.detach() for k, v in params.items()},
        "base": base,
        "epsilon": np.array([epsilons[tuple(g.entries)] for g in ledgers]),
        "noise_multiplier": np.array(sigma),
        "sample_rate": np.array(q),
        "releases": np.array([g.releases for g in ledgers]),
        "steps": np.array(totals),
    }
