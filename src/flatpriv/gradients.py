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

from .tree import Tree

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Oracle(Protocol):
    def __call__(self, params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]: ...


def mean_grad(model: torch.nn.Module, loss_fn: LossFn = F.cross_entropy) -> Oracle:
    """∇_w L_B(w) = ∇_w (1/|B|) Σ_{i∈B} ℓ(f_w(x_i), y_i), the non-private mean gradient.

    Plain reverse-mode autograd on fresh leaves: a single model needs no functorch transform, and this keeps
    the step as fast as a hand-written ``loss.backward()`` loop.
    """

    def oracle(params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            loss = loss_fn(functional_call(model, leaves, (x,)), y)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves.keys(), grads)), loss.detach()

    return oracle
