"""Algorithms as rows: each name maps to a function building a gradient pipeline from the config.

A pipeline is ``(init, grad)`` with ``grad(params, state, x, y) -> (g, state, loss)``; the descent is a stock
``torch.optim`` optimizer fed with ``g`` (so momentum, weight decay, Adam and schedules are PyTorch's own).
The weights are never moved to w + ε: the perturbed point is a different tree passed to the same oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from . import sharpness
from . import tree as T
from .clipping import clipped_grad
from .config import Config
from .errors import FlatprivError
from .gradients import LossFn, Oracle, mean_grad
from .private import dp_gradient, noisy_gradient
from .tree import Tree

State = Any
GradFn = Callable[[Tree, State, torch.Tensor, torch.Tensor], tuple[Tree, State, torch.Tensor]]


class Pipeline(NamedTuple):
    init: Callable[[Tree], State]
    grad: GradFn


Builder = Callable[[Config, torch.nn.Module, Any, LossFn], Pipeline]


def plain(oracle: Oracle) -> Pipeline:
    """SGD: g = ∇L_B(w)."""

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        return g, state, loss

    return Pipeline(lambda params: (), grad)


def ascent(oracle: Oracle, asc: sharpness.Ascent) -> Pipeline:
    """SAM family: g = ∇L_B(w); ε = direction(g); return ∇L_B(w + ε) on the same minibatch (two passes)."""

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        eps, state = asc.direction.update(g, state, params)
        g_adv, _ = oracle(T.add(params, eps), x, y)
        return g_adv, state, loss

    return Pipeline(asc.direction.init, grad)


def sharpreg(oracle: Oracle, rho: float, lam: float) -> Pipeline:
    """Sharp-seeking mitigation (paper 1; science.md §1.4, a reconstruction): minimise L(w) − λ[L(w+ε) − L(w)].

    ε = ρ g/‖g‖ and the descent gradient is (1 + λ) ∇L(w) − λ ∇L(w + ε) (ε treated as a constant, as in SAM).
    """
    direction = sharpness.sam(rho).direction

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        eps, state = direction.update(g, state, params)
        g_adv, _ = oracle(T.add(params, eps), x, y)
        return T.add(T.scale(g, 1.0 + lam), g_adv, alpha=-lam), state, loss

    return Pipeline(direction.init, grad)


def take_step(pipeline: Pipeline, params: Tree, state: State, optimizer: torch.optim.Optimizer,
              x: torch.Tensor, y: torch.Tensor) -> tuple[State, torch.Tensor]:
    """One training step: the pipeline's gradient becomes ``p.grad`` and the stock optimizer descends."""
    g, state, loss = pipeline.grad(params, state, x, y)
    for k, p in params.items():
        p.grad = g[k]
    optimizer.step()
    return state, loss


@dataclass(frozen=True)
class Algorithm:
    """One row of the registry.

    ``private``: trained with Poisson sampling, clipping and noise, with ε accounted; ``releases`` is the number
    of privatised gradients per step (what the accountant composes); ``noisy`` marks Noisy-SGD (noise, no ε).
    """

    name: str
    rule: str  # the update rule in one line, shown by `flatpriv algorithms` and in docs
    build: Builder  # (cfg, model, private run or None, loss function) -> Pipeline; see :meth:`pipeline`
    private: bool = False
    releases: int = 0
    noisy: bool = False

    def pipeline(self, cfg: Config, model: torch.nn.Module, priv: Any = None,
                 loss_fn: LossFn = F.cross_entropy) -> Pipeline:
        """This row's gradient pipeline; ``loss_fn(logits, y)`` is the minibatch loss L_B (non-private rows)."""
        return self.build(cfg, model, priv, loss_fn)


def _dp(asc: Callable[[Config], sharpness.Ascent | None]) -> Builder:
    def build(c: Config, model: torch.nn.Module, priv: Any, loss_fn: LossFn) -> Pipeline:
        del loss_fn  # the clipped oracle's per-example loss is cross-entropy
        oracle = clipped_grad(model, c.privacy.clip_norm, c.privacy.clip_method)
        return Pipeline(*dp_gradient(oracle, priv.privatizer, asc(c), c.privacy.physical_batch_size))
    return build


def _previous(direction: sharpness.Ascent) -> sharpness.Ascent:
    return sharpness.Ascent(direction.direction, source="previous")


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm("sgd", "w ← opt(w, ∇L_B(w))", lambda c, m, p, L: plain(mean_grad(m, L))),
        Algorithm("sam", "ε = ρ g/‖g‖; w ← opt(w, ∇L_B(w+ε))",
                  lambda c, m, p, L: ascent(mean_grad(m, L), sharpness.sam(c.sharpness.rho))),
        Algorithm("vasso", "d = (1−θ)d + θg; ε = ρ d/‖d‖; w ← opt(w, ∇L_B(w+ε))",
                  lambda c, m, p, L: ascent(mean_grad(m, L), sharpness.vasso(c.sharpness.rho, c.sharpness.theta))),
        Algorithm("asam", "ε = ρ T²g/‖Tg‖, T = |w|+η; w ← opt(w, ∇L_B(w+ε))",
                  lambda c, m, p, L: ascent(mean_grad(m, L), sharpness.asam(c.sharpness.rho, c.sharpness.asam_eta))),
        Algorithm("sharpreg", "ε = ρ g/‖g‖; w ← opt(w, (1+λ)∇L_B(w) − λ∇L_B(w+ε))",
                  lambda c, m, p, L: sharpreg(mean_grad(m, L), c.sharpness.rho, c.sharpness.sharpreg_lambda)),
        Algorithm("noisy_sgd", "g = ∇L_B(w) + N(0, (σ/B)²I), no clipping: NOT private, no ε",
                  lambda c, m, p, L: Pipeline(*noisy_gradient(mean_grad(m, L), c.privacy.noise_multiplier,
                                                           c.train.batch_size, p.generator)), noisy=True),
        Algorithm("dpsgd", "g̃ = (Σ clip_C ∇ℓ_i(w) + N(0,σ²C²I))/(qN); 1 release/step",
                  _dp(lambda c: None), private=True, releases=1),
        Algorithm("dpsam", "g̃₁ = priv(w); ε = ρ g̃₁/‖g̃₁‖; g̃ = priv(w+ε); 2 releases/step",
                  _dp(lambda c: sharpness.sam(c.sharpness.rho)), private=True, releases=2),
        Algorithm("dpsat", "ε = ρ g̃_{t−1}/‖g̃_{t−1}‖ (ε₀ = 0); g̃ = priv(w+ε); 1 release/step",
                  _dp(lambda c: _previous(sharpness.sam(c.sharpness.rho))), private=True, releases=1),
        Algorithm("dpvasso_sat", "d = (1−θ)d + θg̃_{t−1}; ε = ρ d/‖d‖; g̃ = priv(w+ε); 1 release/step",
                  _dp(lambda c: _previous(sharpness.vasso(c.sharpness.rho, c.sharpness.theta))),
                  private=True, releases=1),
    ]
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise FlatprivError(f"algorithm = '{name}': must be one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def make_optimizer(cfg: Config, params: list[torch.Tensor], total_steps: int) -> tuple[
        torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The descent step: SGD (momentum, Nesterov, weight decay) or Adam, constant or cosine learning rate."""
    o = cfg.optim
    opt: torch.optim.Optimizer
    if o.name == "sgd":
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                              weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    sched = None
    if o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return opt, sched
