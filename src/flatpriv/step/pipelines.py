"""Gradient pipelines of the non-private rows: ``(init, grad)`` with ``grad(params, state, x, y) -> (g, state, loss)``.

The descent is a stock ``torch.optim`` optimizer fed with ``g`` (:func:`take_step`), so momentum, weight decay,
Adam and schedules are PyTorch's own. The weights are never moved to w + ε: the perturbed point is a different
tree passed to the same oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .. import tree as T
from ..tree import Tree
from . import ascent as sharpness
from .oracles import Oracle
from .transforms import perturb

State = Any
GradFn = Callable[[Tree, State, torch.Tensor, torch.Tensor], tuple[Tree, State, torch.Tensor]]


class Pipeline(NamedTuple):
    """A row's gradient side: ``init(params) -> state`` and ``grad(params, state, x, y) -> (g, state, loss)``.

    >>> pipe = plain(lambda p, x, y: ({"w": 2 * p["w"]}, x.sum()))
    >>> pipe.grad({"w": torch.ones(1)}, pipe.init({}), torch.ones(2), None)
    ({'w': tensor([2.])}, (), tensor(2.))
    """

    init: Callable[[Tree], State]
    grad: GradFn


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
        point, state = perturb(asc.direction, g, state, params)
        g_adv, _ = oracle(point, x, y)
        return g_adv, state, loss

    return Pipeline(asc.direction.init, grad)


def sharpreg(oracle: Oracle, rho: float, lam: float) -> Pipeline:
    """Sharp-seeking mitigation (paper 1; science.md §1.4, a reconstruction): minimise L(w) − λ[L(w+ε) − L(w)].

    ε = ρ g/‖g‖ and the descent gradient is (1 + λ) ∇L(w) − λ ∇L(w + ε) (ε treated as a constant, as in SAM).
    """
    direction = sharpness.sam(rho).direction

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        point, state = perturb(direction, g, state, params)
        g_adv, _ = oracle(point, x, y)
        return T.add(T.scale(g, 1.0 + lam), g_adv, alpha=-lam), state, loss

    return Pipeline(direction.init, grad)


def take_step(
    pipeline: Pipeline, params: Tree, state: State, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[State, torch.Tensor]:
    """One training step: the pipeline's gradient becomes ``p.grad`` and the stock optimizer descends."""
    g, state, loss = pipeline.grad(params, state, x, y)
    for k, p in params.items():
        p.grad = g[k]
    optimizer.step()
    return state, loss
