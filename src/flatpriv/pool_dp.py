"""DP pools: K private models at once, each with its own Poisson batches, noise, generators and ledger.

Model k samples its batch from its own subset S_k with rate q_k = batch_size / |S_k|, so batch sizes differ between
models: batches are padded to the widest with weight-0 rows. The clipped sums Σ_i clip_C(∇ℓ_i) come from ghost
clipping vmapped over the model axis (:mod:`flatpriv.ghost_pool`), or for convolutional models on a CPU from the
single run's oracle once per model (see :func:`flatpriv.pool_steps.vmap_models`); noise, division, the SAM-family
perturbation and the descent are vectorized over the model axis. Model k's noise N(0, σ_k²C²I) is drawn from its
own generator in the same order as a single run, and the sum is divided by q_k·|S_k|. Model k therefore equals
``flatpriv train`` on S_k with ``privacy.noise_seed = noise_seed + 2k`` (the sampler uses the next seed, as in a
single run). With exact keep masks all models share σ, q and the number of steps, so their ledgers and ε are equal;
with Bernoulli masks each model has the (q_k, σ_k, T_k) and the ε_k of its own single run (σ_k calibrated per
subset size when a target ε is given). DP-SGD, DP-SAM (two releases per step), DP-SAT and DP-VaSSO-SAT.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import stack_module_state
from tqdm.auto import tqdm

from .clipping import clipped_grad, supports_ghost
from .config import Config
from .data import Dataset
from .errors import FlatprivError
from .ghost_pool import pooled_clipped_sums
from .models import build_model
from .pool_steps import descend, lr_table, vmap_models
from .privacy.accounting import Ledger, epsilon_from_ledger
from .privacy.sampling import make_generator
from .private import PrivateRun, setup_privacy
from .step import get_algorithm, make_optimizer

SUPPORTED = ("dpsgd", "dpsam", "dpsat", "dpvasso_sat")


def stacked_models(cfg: Config, data: Dataset, seeds: list[int]) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """Model k initialised under ``torch.manual_seed(seeds[k])`` (as a single run), stacked on a leading axis, and
    a parameter-free copy on the meta device to evaluate any stacked tree with ``functional_call``."""
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(build_model(cfg.model, data.input_shape, data.num_classes).to(data.x_train.device))
    params, _ = stack_module_state(models)
    return params, copy.deepcopy(models[0]).to("meta")


def model_generators(cfg: Config, seeds: list[int], device: torch.device,
                     sampler: bool = False) -> list[torch.Generator]:
    """Model k's (seed ``cfg.seed + k``) noise generator, seeded noise_seed + 2k, or with ``sampler`` its Poisson
    sampler, seeded noise_seed + 2k + 1: a single run's with privacy.noise_seed = noise_seed + 2k. OS entropy
    when noise_seed is unset."""
    base = cfg.privacy.noise_seed
    return [make_generator(base + 2 * (s - cfg.seed) + int(sampler) if base >= 0 else -1, device) for s in seeds]


def _clipped_sums(base: torch.nn.Module, cfg: Config, device: torch.device) -> Callable[..., dict[str, torch.Tensor]]:
    """``sums(params, xb, yb, counts)``: Σ_i clip_C(∇ℓ_i) for every model on the first ``counts[k]`` rows of its
    batch: vectorized ghost clipping (:mod:`flatpriv.ghost_pool`) when :func:`flatpriv.pool_steps.vmap_models` and
    every layer allows it, else the single run's oracle (ghost norms, or vmap over examples) once per model."""
    if vmap_models(base, device) and cfg.privacy.clip_method != "vmap" and supports_ghost(base):
        pooled = pooled_clipped_sums(base, cfg.privacy.clip_norm)

        def vectorized(points: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                       counts: list[int]) -> dict[str, torch.Tensor]:
            w = (torch.arange(xb.shape[1], device=xb.device) < torch.tensor(counts, device=xb.device)[:, None])
            return pooled(points, xb, yb, w.to(xb.dtype))

        return vectorized
    oracle = clipped_grad(base, cfg.privacy.clip_norm, cfg.privacy.clip_method)

    def per_model(points: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                  counts: list[int]) -> dict[str, torch.Tensor]:
        sums = [oracle({n: v[k] for n, v in points.items()}, xb[k, :c], yb[k, :c])[0] for k, c in enumerate(counts)]
        return {n: torch.stack([s[n] for s in sums]) for n in points}

    return per_model


def _setups(cfg: Config, sizes: list[int], device: torch.device) -> dict[int, PrivateRun]:
    """The single run's privacy set-up (q, σ, steps per epoch) for each distinct subset size; σ is calibrated
    once per size when a target ε is given."""
    releases = get_algorithm(cfg.algorithm).releases
    return {m: setup_privacy(cfg, True, releases, False, m, device) for m in sorted(set(sizes))}  # type: ignore


def train_dp_models(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                    quiet: bool = True) -> dict[str, Any]:
    if cfg.algorithm not in SUPPORTED:
        raise FlatprivError(f"pools of {cfg.algorithm} are not available yet: private pools train "
                            f"{' and '.join(SUPPORTED)}")
    device = data.x_train.device
    sizes = [int(row.sum()) for row in keep]
    k_models, width = len(sizes), max(sizes)
    subsets = torch.zeros(k_models, width, dtype=torch.long, device=device)
    for k, row in enumerate(keep):
        subsets[k, :sizes[k]] = torch.as_tensor(np.flatnonzero(row), device=device)
    runs = _setups(cfg, sizes, device)
    q = [runs[m].sample_rate for m in sizes]
    sigma = [runs[m].noise_multiplier for m in sizes]
    totals = [runs[m].steps_per_epoch * cfg.train.epochs for m in sizes]
    clip = cfg.privacy.clip_norm
    noise_scale = torch.tensor([s * clip for s in sigma], device=device)
    divisor = torch.tensor([qk * m for qk, m in zip(q, sizes)], device=device)  # expected batch size q_k·|S_k|
    params, base = stacked_models(cfg, data, seeds)
    clipped = _clipped_sums(base, cfg, device)
    lrs = lr_table(cfg, totals)
    optimizer, _ = make_optimizer(cfg, list(params.values()), 1)
    noise, samplers = model_generators(cfg, seeds, device), model_generators(cfg, seeds, device, sampler=True)
    ledgers = [Ledger() for _ in sizes]
    previous: dict[str, torch.Tensor] | None = None  # g̃_{t−1} (DP-SAT) per model
    d: dict[str, torch.Tensor] | None = None  # EMA of the releases (DP-VaSSO-SAT), d_1 = g̃_0
    rho, theta = cfg.sharpness.rho, cfg.sharpness.theta

    def perturb(point: dict, direction: dict) -> dict:  # point + ρ · direction / ‖direction‖, per model
        norm = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in direction.values()))
        scale = rho / (norm + 1e-12)
        return {n: v + scale.view(-1, *[1] * (v.dim() - 1)) * direction[n] for n, v in point.items()}

    def per_model(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *[1] * (like.dim() - 1))

    for t in tqdm(range(lrs.shape[1]), desc=f"DP pool chunk ({k_models} models)", unit="step",
                  disable=quiet or None, leave=False):
        active = [t < total for total in totals]  # a finished model samples, draws and releases nothing more
        picks = [(torch.rand(m, generator=g, device=device) < qk).nonzero().squeeze(1) if on
                 else torch.empty(0, dtype=torch.long, device=device)
                 for m, qk, g, on in zip(sizes, q, samplers, active)]
        counts = [len(p) for p in picks]
        pos = torch.zeros(k_models, max(1, max(counts)), dtype=torch.long, device=device)
        for k, p in enumerate(picks):
            pos[k, :len(p)] = p
        idx = torch.gather(subsets, 1, pos)
        xb, yb = data.x_train[idx], data.y_train[idx]

        def release(point: dict, xb: torch.Tensor = xb, yb: torch.Tensor = yb, counts: list[int] = counts,
                    active: list[bool] = active) -> dict:
            """One privatised gradient per model on this step's batches, recorded in each model's ledger."""
            sums = clipped(point, xb, yb, counts)
            noisy = {n: torch.stack([torch.randn(v.shape[1:], generator=g, device=device, dtype=v.dtype) if on
                                     else torch.zeros(v.shape[1:], device=device, dtype=v.dtype)
                                     for g, on in zip(noise, active)]) for n, v in sums.items()}
            for k in range(k_models):
                if active[k]:
                    ledgers[k].record(sigma[k], q[k])
            return {n: (sums[n] + per_model(noise_scale, v) * noisy[n]) / per_model(divisor, v)
                    for n, v in sums.items()}

        here = {n: v.detach() for n, v in params.items()}
        if cfg.algorithm == "dpsgd":
            g_tilde = release(here)
        elif cfg.algorithm == "dpsam":  # two releases: the ascent direction is itself privatised
            g_tilde = release(perturb(here, release(here)))
        else:  # DP-SAT / DP-VaSSO-SAT: the direction comes from earlier releases (post-processing)
            if previous is not None and cfg.algorithm == "dpvasso_sat":
                d = previous if d is None else {n: torch.lerp(d[n], previous[n], theta) for n in d}
            direction = d if cfg.algorithm == "dpvasso_sat" else previous
            g_tilde = release(here if direction is None else perturb(here, direction))
            previous = g_tilde
        descend(optimizer, params, g_tilde, lrs[:, t])
    epsilons: dict[tuple, float] = {}  # equal ledgers (all of them, with exact keep masks) are accounted once
    for ledger in ledgers:
        if tuple(ledger.entries) not in epsilons:
            epsilons[tuple(ledger.entries)] = epsilon_from_ledger(ledger, cfg.privacy.delta, cfg.privacy.accountant)
    return {"params": {k: v.detach() for k, v in params.items()}, "base": base,
            "epsilon": np.array([epsilons[tuple(g.entries)] for g in ledgers]),
            "noise_multiplier": np.array(sigma), "sample_rate": np.array(q),
            "releases": np.array([g.releases for g in ledgers]), "steps": np.array(totals)}
