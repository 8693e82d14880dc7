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


def on_host(tree: Tree) -> bool:
    """Plain CPU tensors (not inside a torch.func transform): a scalar read from them costs no device sync."""
    leaf = next(iter(tree.values()), None)
    return leaf is not None and not _wrapped(leaf) and leaf.device.type == "cpu"


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


class Evaluator:
    """``Evaluator(model)(tree, x)`` = ``torch.func.functional_call(model, tree, (x,))`` for a tree holding exactly
    the model's parameters, at a fraction of functional_call's fixed cost (``benchmarks/dp_parts.py``, batch 256: a
    40-256-256-10 MLP forward takes 0.68–0.74 ms called directly, 0.72–0.82 ms through this and 1.10–1.26 ms
    through functional_call; docs/benchmarks.md). The parameter slots are found once; a call puts the tree's
    tensors into them and puts the model's own back afterwards, even when the forward raises. Used where a DP step
    evaluates the model at w + ε every step (DP-SAT, DP-SAM's second release). A model with a parameter registered
    twice (tied weights), a tree with other keys, or functorch-wrapped tensors (inside a pool's vmap) go through
    functional_call itself."""

    def __init__(self, model: torch.nn.Module) -> None:
        from torch.func import functional_call

        self.model = model
        self._functional_call = functional_call
        names = [k for k, _ in model.named_parameters(remove_duplicate=False)]
        self._lean = len(names) == len(dict(model.named_parameters()))  # no parameter under two names
        self._slots = []
        for key in names:
            prefix, _, leaf = key.rpartition(".")
            self._slots.append((model.get_submodule(prefix), leaf, key))
        self._keys = set(names)

    def __call__(self, tree: Tree, x: torch.Tensor) -> torch.Tensor:
        if not (self._lean and tree.keys() == self._keys and _fused(tree)):
            return self._functional_call(self.model, tree, (x,))
        saved = [module._parameters[leaf] for module, leaf, _ in self._slots]
        try:
            for module, leaf, key in self._slots:
                module._parameters[leaf] = tree[key]  # type: ignore[assignment]
            return self.model(x)
        finally:
            for (module, leaf, _), p in zip(self._slots, saved):
                module._parameters[leaf] = p
