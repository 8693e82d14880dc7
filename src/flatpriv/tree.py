"""Parameter trees: ``dict[str, Tensor]`` keyed like ``model.named_parameters()``.

Arithmetic goes through ``torch._foreach_*`` kernels, which process every leaf in one call: the SAM family
does several tree operations per step and per-leaf Python loops would dominate on small models. Inside
``torch.func`` transforms (a pool vmapped over its model axis) foreach kernels have no batching rule, so the
same operations fall back to per-leaf ops there.
"""

from __future__ import annotations

import torch

Tree = dict[str, torch.Tensor]
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _fused(tree: Tree) -> bool:
    leaf = next(iter(tree.values()), None)
    return leaf is not None and not _wrapped(leaf)


def zeros_like(tree: Tree) -> Tree:
    return {k: torch.zeros_like(v) for k, v in tree.items()}


def detach(tree: Tree) -> Tree:
    return {k: v.detach() for k, v in tree.items()}


def clone(tree: Tree) -> Tree:
    return {k: v.detach().clone() for k, v in tree.items()}


def add(a: Tree, b: Tree, alpha: float = 1.0) -> Tree:
    """a + alpha * b, leaf by leaf, as a new tree."""
    if _fused(a) and _fused(b):
        return dict(zip(a.keys(), torch._foreach_add(list(a.values()), list(b.values()), alpha=alpha)))
    return {k: a[k] + alpha * b[k] for k in a}


def scale(tree: Tree, c: float | torch.Tensor) -> Tree:
    if _fused(tree) and not (isinstance(c, torch.Tensor) and _wrapped(c)):
        return dict(zip(tree.keys(), torch._foreach_mul(list(tree.values()), c)))
    return {k: v * c for k, v in tree.items()}


def lerp(a: Tree, b: Tree, weight: float) -> Tree:
    """(1 - weight) * a + weight * b."""
    if _fused(a) and _fused(b):
        return dict(zip(a.keys(), torch._foreach_lerp(list(a.values()), list(b.values()), weight)))
    return {k: torch.lerp(a[k], b[k], weight) for k in a}


def mul(a: Tree, b: Tree) -> Tree:
    if _fused(a) and _fused(b):
        return dict(zip(a.keys(), torch._foreach_mul(list(a.values()), list(b.values()))))
    return {k: a[k] * b[k] for k in a}


def norm(tree: Tree) -> torch.Tensor:
    """Global L2 norm over all leaves, ‖g‖₂ as in SAM (a 0-d tensor, so no host sync is forced)."""
    if not tree:
        return torch.zeros(())
    norms = torch._foreach_norm(list(tree.values())) if _fused(tree) else [v.norm() for v in tree.values()]
    return torch.linalg.vector_norm(torch.stack(norms))


def vdot(a: Tree, b: Tree) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a.values(), b.values()))  # type: ignore[return-value]


def to_numpy(tree: Tree) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in tree.items()}
