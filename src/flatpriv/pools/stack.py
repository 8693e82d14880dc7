"""Stacked models: K parameter trees on a leading model axis, their generators, and one gradient step over them.

Model k is initialised under ``torch.manual_seed(seeds[k])``, exactly as its single run, and its noise and sampler
generators are seeded as its single run's with ``privacy.noise_seed = noise_seed + 2k``. :func:`pool_grad` runs a
pipeline's ``grad`` either as one ``vmap`` over the model axis (the design's default) or one model at a time
(convolutional models on a CPU, see :func:`flatpriv.pools.steps.vmap_models`), with identical results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.func import stack_module_state, vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ..config import Config
from ..data import Dataset
from ..models import build_model
from ..privacy.sampling import Source, make_generator
from ..tree import Evaluator

Tree = dict[str, torch.Tensor]
_TENSOR = object()  # marks where a vmapped tensor goes back into the state


def stacked_models(cfg: Config, data: Dataset, seeds: list[int]) -> tuple[Tree, torch.nn.Module]:
    """Model k initialised under ``torch.manual_seed(seeds[k])`` (as a single run), stacked on a leading axis, and
    a parameter-free copy on the meta device to evaluate any stacked tree (``functional_call``,
    ``tree.Evaluator``)."""
    models = []
    for k, s in enumerate(seeds):
        torch.manual_seed(s)
        model = build_model(cfg.model, data.input_shape, data.num_classes, checked=k > 0)
        models.append(model.to(data.x_train.device))
    params, _ = stack_module_state(models)
    return params, copy.deepcopy(models[0]).to("meta")


def model_generators(cfg: Config, seeds: list[int], device: torch.device, sampler: bool = False) -> list[Source]:
    """Model k's (seed ``cfg.seed + k``) noise generator, seeded noise_seed + 2k, or with ``sampler`` its Poisson
    sampler, seeded noise_seed + 2k + 1: a single run's with privacy.noise_seed = noise_seed + 2k. OS entropy
    when noise_seed is unset; with privacy.secure_rng, each is its own ``SecureSource`` (os.urandom)."""
    base, secure = cfg.privacy.noise_seed, cfg.privacy.secure_rng
    return [
        make_generator(base + 2 * (s - cfg.seed) + int(sampler) if base >= 0 else -1, device, secure) for s in seeds
    ]


def pool_grad(
    grad: Callable[..., tuple[Tree, Any, torch.Tensor]], vectorized: bool, params: Tree, state: Any, *args: Any
) -> tuple[Tree, Any]:
    """``grad(params_k, state_k, *args_k)`` for every model k: one ``vmap`` over the leading axis of every tensor
    argument, or (``vectorized=False``) a loop over the models with the results stacked. State leaves that are
    not tensors yet (VaSSO's d and DP-SAT's last release before the first step) are shared, not mapped."""
    if vectorized:
        state_dims = tree_map(lambda v: 0 if isinstance(v, torch.Tensor) else None, state)
        arg_dims = tuple(tree_map(lambda v: 0 if isinstance(v, torch.Tensor) else None, a) for a in args)
        static: list[Any] = []  # the new state's non-tensor leaves, which vmap cannot return

        def tensors_out(p: Tree, s: Any, *a: Any) -> tuple[Tree, list[torch.Tensor]]:
            g, new, _ = grad(p, s, *a)
            leaves, spec = tree_flatten(new)
            static[:] = [spec, [_TENSOR if isinstance(v, torch.Tensor) else v for v in leaves]]
            return g, [v for v in leaves if isinstance(v, torch.Tensor)]

        g, tensors = vmap(tensors_out, in_dims=(0, state_dims, *arg_dims))(params, state, *args)
        spec, leaves = static
        it = iter(tensors)
        return g, tree_unflatten([next(it) if v is _TENSOR else v for v in leaves], spec)

    def part(tree: Any, k: int) -> Any:
        return tree_map(lambda v: v[k] if isinstance(v, torch.Tensor) else v, tree)

    outs = [
        grad(part(params, k), part(state, k), *(part(a, k) for a in args))
        for k in range(next(iter(params.values())).shape[0])
    ]
    g = {n: torch.stack([o[0][n] for o in outs]) for n in params}
    stacked = tree_map(lambda *vs: torch.stack(vs) if isinstance(vs[0], torch.Tensor) else vs[0], *[o[1] for o in outs])
    return g, stacked


@torch.no_grad()
def pool_logits(base: torch.nn.Module, params: Tree, x: torch.Tensor, batch: int) -> torch.Tensor:
    """[K, n, C] logits, one model at a time: on a CPU twice as fast as a vmap over models (measured for the MLP
    and the 1-D CNN), since every model sees the same inputs and nothing is gained by batching the weights."""
    k_models = next(iter(params.values())).shape[0]
    call = Evaluator(base)  # model k's tensors put into the (meta) model's slots: less fixed cost per call
    out = []
    for k in range(k_models):
        tree = {n: v[k] for n, v in params.items()}
        out.append(torch.cat([call(tree, x[i : i + batch]) for i in range(0, len(x), batch)]))
    return torch.stack(out)
