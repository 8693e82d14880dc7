"""Parameter trees: ``dict[str, Tensor]`` keyed like ``model.named_parameters()``.

All arithmetic goes through ``torch._foreach_*`` kernels, which process every leaf in one call: the SAM
family does several tree operations per step and per-leaf Python loops would dominate on small models.
"""

from __future__ import annotations

import torch

Tree = dict[str, torch.Tensor]


def zeros_like(tree: Tree) -> Tree:
    return {k: torch.zeros_like(v) for k, v in tree.items()}


def detach(tree: Tree) -> Tree:
    return {k: v.detach() for k, v in tree.items()}


def clone(tree: Tree) -> Tree:
    return {k: v.detach().clone() for k, v in tree.items()}


def add(a: Tree, b: Tree, alpha: float = 1.0) -> Tree:
    """a + alpha * b, leaf by leaf, as a new tree."""
    return dict(zip(a.keys(), torch._foreach_add(list(a.values()), list(b.values()), alpha=alpha)))


def scale(tree: Tree, c: float | torch.Tensor) -> Tree:
    return dict(zip(tree.keys(), torch._foreach_mul(list(tree.values()), c)))


def lerp(a: Tree, b: Tree, weight: float) -> Tree:
    """(1 - weight) * a + weight * b."""
    return dict(zip(a.keys(), torch._foreach_lerp(list(a.values()), list(b.values()), weight)))


def mul(a: Tree, b: Tree) -> Tree:
    return dict(zip(a.keys(), torch._foreach_mul(list(a.values()), list(b.values()))))


def norm(tree: Tree) -> torch.Tensor:
    """Global L2 norm over all leaves, ‖g‖₂ as in SAM (a 0-d tensor, so no host sync is forced)."""
    if not tree:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tree.values()))))


def vdot(a: Tree, b: Tree) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a.values(), b.values()))  # type: ignore[return-value]


def to_numpy(tree: Tree) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in tree.items()}
