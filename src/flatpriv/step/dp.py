"""Private gradient pipelines: the DP step as one pure function, shared by single runs and pools.

A DP pipeline's ``grad(params, state, x, y, noise)`` computes each release as

    g̃ = privatize(clip(w'), z_r, σC, q·N) = ( Σ_{i∈B} clip_C(∇ℓ_i(w')) + σC·z_r ) / (q·N)

with the draws z_r and the scalars passed in (:class:`flatpriv.privacy.Noise`), so the same function runs in a
single run (:func:`single_run`: draws from the run's generator, records the ledger) and under ``vmap`` over a
pool's model axis (the pool draws model k's z from model k's generator and records model k's ledger). Where the
release is taken is the row's :class:`~flatpriv.step.ascent.Ascent`:

* none: DP-SGD (Abadi et al. 2016), one release per step;
* ``source="current"``: DP-SAM, g̃₁ = priv(w), ε = direction(g̃₁), g̃ = priv(w + ε): two releases per step;
* ``source="previous"``: DP-SAT (Park et al. 2023) and DP-VaSSO-SAT, ε from the last release (ε₀ = 0): reusing a
  released gradient is post-processing, so one release per step and ε identical to DP-SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .. import tree as T
from ..privacy.clipping import ClippedOracle
from ..privacy.privatizer import Noise, Privatizer, privatize
from ..privacy.sampling import Source, gaussian_like
from ..tree import Tree
from .ascent import Ascent
from .oracles import Oracle
from .pipelines import Pipeline
from .transforms import perturb

State = Any
ClipFn = Callable[[Tree, torch.Tensor, torch.Tensor], tuple[Tree, torch.Tensor]]  # (Σ clip_C ∇ℓ_i, mean loss)
DPGradFn = Callable[[Tree, State, torch.Tensor, torch.Tensor, Noise], tuple[Tree, State, torch.Tensor]]


class DPPipeline(NamedTuple):
    """``init(params) -> state`` and ``grad(params, state, x, y, noise) -> (g̃, state, loss)``; ``releases`` is the
    number of draws ``grad`` consumes per step (what the ledger records)."""

    init: Callable[[Tree], State]
    grad: DPGradFn
    releases: int


def dp_pipeline(clip: ClipFn, asc: Ascent | None) -> DPPipeline:
    """The DP step for a clipped-sum function ``clip(params, x, y)`` and the row's ascent (None: DP-SGD).

    For ``source="previous"`` the state is (direction state, last release or None), so ε₀ = 0 and the first step
    is exactly DP-SGD's.

    >>> from flatpriv.privacy import Noise
    >>> pipe = dp_pipeline(lambda p, x, y: ({"w": x.sum(0)}, x.new_zeros(())), None)
    >>> pipe.grad({"w": torch.zeros(1)}, (), torch.ones(3, 1), None, Noise(({"w": torch.ones(1)},), 1.0, 2.0))[0]
    {'w': tensor([2.])}
    """
    releases = 2 if asc is not None and asc.source == "current" else 1

    def init(params: Tree) -> State:
        return () if asc is None else (asc.direction.init(params), None)

    def grad(
        params: Tree, state: State, x: torch.Tensor, y: torch.Tensor, noise: Noise
    ) -> tuple[Tree, State, torch.Tensor]:
        if len(noise.z) != releases:
            raise ValueError(f"this DP step makes {releases} release(s) per step; given {len(noise.z)} draws")

        def release(point: Tree, r: int) -> tuple[Tree, torch.Tensor]:
            s, loss = clip(point, x, y)
            return privatize(s, noise.z[r], noise.std, noise.divisor), loss

        if asc is None:
            g, loss = release(params, 0)
            return g, state, loss
        dir_state, previous = state
        if asc.source == "current":
            g_asc, loss = release(params, 0)
            point, dir_state = perturb(asc.direction, g_asc, dir_state, params)
            g, _ = release(point, 1)
            return g, (dir_state, None), loss
        point = params
        if previous is not None:
            point, dir_state = perturb(asc.direction, previous, dir_state, params)
        g, loss = release(point, 0)
        return g, (dir_state, T.detach(g)), loss

    return DPPipeline(init, grad, releases)


def micro_batched(oracle: ClippedOracle, physical_batch_size: int = 0) -> ClipFn:
    """A single run's clipped sum: Σ clip_C(∇ℓ_i) over micro-batches of at most ``physical_batch_size`` (0: all
    at once), and the mean loss; the weights are never touched."""

    def clip(params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        n = len(y)
        if not 0 < physical_batch_size < n:  # one call (the common case): its mean loss as it is
            g, info = oracle(params, x, y)
            return g, info.loss
        step = physical_batch_size
        total: Tree | None = None
        loss_sum = torch.zeros((), device=x.device)
        for i in range(0, max(n, 1), step):
            g, info = oracle(params, x[i : i + step], y[i : i + step])
            total = g if total is None else T.add(total, g)
            loss_sum = loss_sum + info.loss * info.batch_size
        assert total is not None
        return total, loss_sum / max(n, 1)

    return clip


def single_run(pipe: DPPipeline, priv: Privatizer, sensitivity: float) -> Pipeline:
    """A DP pipeline as a single run uses it: each step draws its z from the run's generator (in release order)
    and records its releases in the run's ledger."""

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        out = pipe.grad(params, state, x, y, priv.noise(params, pipe.releases, sensitivity))
        priv.record(pipe.releases)
        return out

    return Pipeline(pipe.init, grad)


def noisy_gradient(oracle: Oracle, noise_multiplier: float, batch_size: int, generator: Source) -> Pipeline:
    """Noisy-SGD (Sander et al. 2024): g = (1/B) Σ ∇ℓ_i + N(0, (σ/B)² I). No clipping: NOT differentially
    private (unbounded sensitivity), so no ε is ever reported for it."""
    std = noise_multiplier / batch_size

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        return T.add(g, gaussian_like(g, std, generator)), state, loss

    return Pipeline(lambda params: (), grad)
