"""Gradient transforms in optax's style: a ``Transform`` is a pair ``(init, update)`` and ``chain`` composes them.

A new method is a new composition, not a subclass. ``update(tree, state, params)`` returns the transformed tree
and the new state; nothing is mutated in place. The SAM family's perturbation ε is such a composition applied
to a gradient, e.g. SAM's ε = ρ · g / ‖g‖ is ``normalize(radius=rho)`` (or ``chain(normalize(), scale(rho))``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .. import tree as T
from ..tree import Tree

State = Any


class Transform(NamedTuple):
    """``init(params) -> state`` and ``update(tree, state, params) -> (tree, state)``: optax's protocol.

    >>> import torch
    >>> sam_eps = chain(normalize(), scale(0.05))  # SAM's ε = ρ g/‖g‖ with ρ = 0.05
    >>> eps, _ = sam_eps.update({"w": torch.tensor([3.0, 4.0])}, sam_eps.init({}), {})
    >>> eps["w"]
    tensor([0.0300, 0.0400])
    """

    init: Callable[[Tree], State]
    update: Callable[[Tree, State, Tree], tuple[Tree, State]]
    # ``point(g, state, params) -> (params + update(g), state)`` in fewer passes, for the transforms that have
    # such a form (``normalize``, and a ``chain`` ending in one); :func:`perturb` falls back to update-then-add
    point: Callable[[Tree, State, Tree], tuple[Tree, State]] | None = None


def identity() -> Transform:
    return Transform(lambda params: (), lambda g, state, params: (g, state))


def chain(*transforms: Transform) -> Transform:
    """Apply the transforms left to right; the state is the tuple of their states."""

    def init(params: Tree) -> State:
        return tuple(t.init(params) for t in transforms)

    def run(g: Tree, state: State, params: Tree, last_point: bool) -> tuple[Tree, State]:
        if len(state) != len(transforms):
            raise ValueError(f"chain of {len(transforms)} transforms given {len(state)} states; use its init")
        new_states = []
        for i, (t, s) in enumerate(zip(transforms, state)):
            fused = last_point and i == len(transforms) - 1 and t.point is not None
            g, s = t.point(g, s, params) if fused else t.update(g, s, params)  # type: ignore[misc]
            new_states.append(s)
        return g, tuple(new_states)

    def update(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        return run(g, state, params, False)

    def point(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        return run(g, state, params, True)

    return Transform(init, update, point if transforms and transforms[-1].point is not None else None)


def perturb(direction: Transform, g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
    """The SAM family's perturbed point w + ε, ε = ``direction(g)``: one fused pass over the weights when the
    direction ends in ``normalize`` (w + (ρ/‖g‖)·g), otherwise ε and then w + ε."""
    if direction.point is not None:
        return direction.point(g, state, params)
    eps, state = direction.update(g, state, params)
    return T.add(params, eps), state


def normalize(eps: float = 1e-12, radius: float = 1.0) -> Transform:
    """g ↦ radius · g / (‖g‖₂ + eps), with the global L2 norm over all leaves.

    ``normalize(radius=ρ)`` is ``chain(normalize(), scale(ρ))`` in one pass over the tree (SAM's ε on a hot path).
    """

    def update(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        return T.scale(g, radius / (T.norm(g) + eps)), state

    def point(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        if T.on_host(g) and T.on_host(params):  # the factor as a float: one pass w + r·g, and no device sync
            return T.add(params, g, alpha=radius / (float(T.norm(g)) + eps)), state
        return T.add(params, update(g, state, params)[0]), state

    return Transform(lambda params: (), update, point)


def scale(c: float) -> Transform:
    """g ↦ c · g."""
    return Transform(lambda params: (), lambda g, state, params: (T.scale(g, c), state))


def ema(theta: float) -> Transform:
    """VaSSO's variance-suppressed direction d_t = (1 − θ) d_{t−1} + θ g_t, with d_1 = g_1 (Li & Giannakis 2023).

    θ = 1 gives d_t = g_t (SAM). The state is d_{t−1}, or None before the first step.
    """

    def update(g: Tree, d: Tree | None, params: Tree) -> tuple[Tree, Tree]:
        d = T.clone(g) if d is None else T.lerp(d, g, theta)
        return d, d

    return Transform(lambda params: None, update)


def adaptive_scale(eta: float) -> Transform:
    """g ↦ T_w g with T_w = |w| + η elementwise: ASAM's normalisation operator (Kwon et al. 2021)."""

    def update(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        t = {k: params[k].detach().abs() + eta for k in g}
        return T.mul(t, g), state

    return Transform(lambda params: (), update)


def ema_residual(sigma: float, lam: float) -> Transform:
    """FriendlySAM's batch-specific part of the gradient (Li et al. 2024): d_t = g_t − σ m_{t−1}, then
    m_t = λ m_{t−1} + (1 − λ) g_t, with m_1 = g_1 and d_1 = g_1 (no average exists before the first step).

    σ = 0 gives d_t = g_t (SAM). The state is m_{t−1}, or None before the first step. The order (d from the
    previous average, then the update) is the authors' released code's and pytorch-optimizer 4.1.0's.
    """

    def update(g: Tree, m: Tree | None, params: Tree) -> tuple[Tree, Tree]:
        if m is None:
            return g, T.clone(g)
        return T.add(g, m, alpha=-sigma), T.lerp(m, g, 1.0 - lam)

    return Transform(lambda params: None, update)


def observe(fn: Callable[[Tree], None]) -> Transform:
    """g ↦ g, calling ``fn(g)`` on the way: a tap that lets a measurement see a pipeline's intermediate tree
    (e.g. VaSSO's g_t and d_t along training) without changing the step."""

    def update(g: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        fn(g)
        return g, state

    return Transform(lambda params: (), update)
