"""Ghost clipping vectorized over a pool's model axis: Σ_i w_i·clip_C(∇ℓ_i) for K models in one computation.

:mod:`flatpriv.privacy.ghost` gets each layer's input a and output gradient g = ∂(Σ_i ℓ_i)/∂s from module hooks and
``torch.autograd.grad``, which cannot run inside ``torch.func.vmap``. Here the same quantities come from function
transforms: a forward hook adds a zero probe δ to every output of a supported layer, s' = s + δ, and records its
input, so ``torch.func.grad`` with respect to the probes is exactly g and the recorded inputs are a. The per-layer
rules of :mod:`flatpriv.privacy.ghost` (ghost norm or materialised G_i, whichever is cheaper; GroupNorm; Embedding) then
give ‖∇ℓ_i‖² and the clipped sum as one weighted product per layer, and ``vmap`` runs all of it over the model axis:
no per-example gradient is materialised beyond what the rules choose, and no Python loop runs over the models.

Rows with weight w_i = 0 pad a model's Poisson batch to the chunk's widest one: their loss is multiplied by 0, so
their g and their norm are 0 and they add nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .clipping import clip_factor
from .ghost import ghost_layers

Tree = dict[str, torch.Tensor]
Sums = Callable[[Tree, torch.Tensor, torch.Tensor, torch.Tensor], Tree]
WeightedClip = Callable[[Tree, torch.Tensor, torch.Tensor, torch.Tensor], tuple[Tree, torch.Tensor]]


def weighted_clipped_sum(base: nn.Module, clip_norm: float) -> WeightedClip:
    """``clip(params, x [B, ...], y [B], w [B]) -> (Σ_i w_i·clip_C(∇ℓ_i), Σ_i w_i ℓ_i)`` for ONE model, built from
    function transforms only, so it runs under ``vmap`` over a pool's model axis; call only when
    :func:`flatpriv.privacy.ghost.supports_ghost` holds for ``base``."""
    layers = ghost_layers(base)
    shapes: dict[tuple, list[list[torch.Size]]] = {}  # input shape -> output shapes of every call of every layer

    def probe_shapes(x_shape: torch.Size) -> list[list[torch.Size]]:
        if x_shape not in shapes:
            seen: list[list[torch.Size]] = [[] for _ in layers]
            handles = [
                m.register_forward_hook(lambda _m, _i, out, s=s: s.append(out.shape))
                for (_, m, _), s in zip(layers, seen)
            ]
            try:
                with torch.no_grad():
                    base(torch.empty(x_shape, device="meta"))
            finally:
                for h in handles:
                    h.remove()
            shapes[x_shape] = seen
        return shapes[x_shape]

    def weighted_loss(
        params: Tree, probes: list[list[torch.Tensor]], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[list[list[torch.Tensor]], torch.Tensor]]:
        inputs: list[list[torch.Tensor]] = [[] for _ in layers]

        def hook(k: int) -> Callable:
            def add_probe(_m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
                inputs[k].append(args[0])
                return out + probes[k][len(inputs[k]) - 1]

            return add_probe

        handles = [m.register_forward_hook(hook(k)) for k, (_, m, _) in enumerate(layers)]
        try:
            logits = functional_call(base, params, (x,))
        finally:
            for h in handles:
                h.remove()
        loss = (F.cross_entropy(logits, y, reduction="none") * w).sum()
        return loss, (inputs, loss.detach())

    def clip(params: Tree, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        probes = [[torch.zeros(s, device=x.device, dtype=x.dtype) for s in calls] for calls in probe_shapes(x.shape)]
        params = {k: v.detach() for k, v in params.items()}
        g, (inputs, loss) = grad(weighted_loss, argnums=1, has_aux=True)(params, probes, x, y, w)
        sq = torch.zeros_like(w)
        finishers = []
        for (prefix, m, rule), a_calls, g_calls in zip(layers, inputs, g):
            if a_calls:
                layer_sq, finish = rule(m, list(zip(a_calls, g_calls)), x.shape[0])
                sq = sq + layer_sq
                finishers.append((prefix, finish))
        c = clip_factor(sq.sqrt(), clip_norm) * w
        out = {prefix + k: v for prefix, finish in finishers for k, v in finish(c).items()}
        return {k: out[k] if k in out else torch.zeros_like(v) for k, v in params.items()}, loss

    return clip


def pooled_clipped_sums(base: nn.Module, clip_norm: float) -> Sums:
    """``sums(params [K, ...], x [K, B, ...], y [K, B], w [K, B]) -> {name: [K, ...]}``: :func:`weighted_clipped_sum`
    vmapped over the model axis."""
    clip = weighted_clipped_sum(base, clip_norm)

    def sums(params: Tree, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Tree:
        return vmap(clip)(params, x, y, w)[0]

    return sums
