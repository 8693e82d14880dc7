"""Gradient oracles: ``oracle(params, x, y) -> (gradient tree, loss)``.

The model is evaluated with ``torch.func.functional_call`` on whatever tree it is given, so evaluating at a
perturbed point is passing ``tree.add(params, eps)``: nothing is written into the model, nothing needs restoring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..tree import Tree

_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Oracle(Protocol):
    """A gradient oracle: ``oracle(params, x, y) -> (∇_w L_B at params, L_B)``, evaluated at whatever tree it is
    given (w or w + ε) without touching the model's own weights.

    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> oracle = mean_grad(model, lambda out, y: ((out.squeeze(1) - y) ** 2).mean())
    >>> g, loss = oracle({"weight": torch.zeros(1, 2)}, torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]))
    >>> g["weight"], loss  # ∂(w·x − y)²/∂w = 2(w·x − y)x at w = 0
    (tensor([[-2., -4.]]), tensor(1.))
    """

    def __call__(self, params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]: ...


def mean_grad(model: torch.nn.Module, loss_fn: LossFn = F.cross_entropy) -> Oracle:
    """∇_w L_B(w) = ∇_w (1/|B|) Σ_{i∈B} ℓ(f_w(x_i), y_i), the non-private mean gradient.

    Plain reverse-mode autograd: a single model needs no functorch transform (inside ``torch.func.vmap``, as in a
    pool, the same oracle switches to ``torch.func.grad_and_value``). When ``params`` is the model's
    own parameter tree the model is called directly (no re-parametrisation), so SGD and the first SAM pass cost
    what a hand-written ``loss.backward()`` loop costs; any other tree (w + ε) goes through ``functional_call``.
    """
    own = dict(model.named_parameters())

    def functional_loss(params: Tree, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, params, (x,)), y)

    vmappable = torch.func.grad_and_value(functional_loss)

    def oracle(params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        if _wrapped(x):  # inside a pool's vmap over models: autograd.grad cannot run there, torch.func can
            return vmappable(params, x, y)
        with torch.enable_grad():
            if len(params) == len(own) and all(params.get(k) is v for k, v in own.items()):
                leaves = own
                loss = loss_fn(model(x), y)
            else:
                leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
                loss = loss_fn(functional_call(model, leaves, (x,)), y)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves.keys(), grads)), loss.detach()

    return oracle
