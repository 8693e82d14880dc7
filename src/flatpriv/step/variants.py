"""SAM variants whose descent direction is not just ∇L_B(w + ε): GSAM and LookSAM, as pipelines over one oracle.

Both are compositions of the pieces every SAM row uses (the oracle at w and at w + ε, SAM's ε = ρ g/‖g‖, tree
arithmetic); what is new is a projection. ``proj(a, b)`` below is the part of a along b, (a·b / ‖b‖²) b, over the
whole tree (or, for LookSAM's ``layerwise``, per parameter tensor). State is plain: a step count (a Python int,
the same for every model of a pool, which steps in lockstep) and LookSAM's g_v (a tree, vmapped per model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import tree as T
from ..tree import Tree
from .oracles import Oracle
from .pipelines import Pipeline, State
from .transforms import normalize, perturb

EPS = 1e-12
GV_EPS = 1e-8  # LookSAM's ‖g_v‖ + 1e-8 per tensor, as pytorch-optimizer 4.1.0 adds it (a bias's g_v can be tiny)


def _sam_point(params: Tree, g: Tree, rho: float) -> Tree:
    """w + ρ g/(‖g‖ + 1e-12): SAM's perturbed point, computed as SAM's own row computes it."""
    return perturb(normalize(EPS, rho), g, (), params)[0]


def _minus_proj(a: Tree, b: Tree) -> Tree:
    """a − (a·b / ‖b‖²) b over the whole tree: the part of a orthogonal to b."""
    nb = T.norm(b)
    return T.add(a, T.scale(b, T.vdot(a, b) / (nb * nb + EPS * EPS)), alpha=-1.0)


def _minus_proj_leaves(a: Tree, b: Tree) -> Tree:
    """The same per parameter tensor: a_l − (a_l·b_l / ‖b_l‖²) b_l for every leaf l."""
    out = {}
    for k in a:
        nb = b[k].norm()
        out[k] = a[k] - ((a[k] * b[k]).sum() / (nb * nb + EPS * EPS)) * b[k]
    return out


def gsam(oracle: Oracle, rho_at: Callable[[int], float], alpha: float) -> Pipeline:
    """GSAM (Zhuang et al., ICLR 2022, "Surrogate gap guided sharpness-aware minimization").

    g = ∇L_B(w), ε = ρ_t g/‖g‖, g_p = ∇L_B(w + ε) (SAM's gradient), g_⊥ = g − (g·g_p/‖g_p‖²) g_p (the part of
    ∇L_B(w) orthogonal to g_p); descend along g_p − α g_⊥, which also lowers the surrogate gap L(w + ε) − L(w)
    without changing the descent along g_p. α = 0 is SAM. ``rho_at(t)`` is ρ at step t (0-based): ρ, or with the
    paper's schedule ρ_t = ρ_min + (ρ − ρ_min)·η_t/η_0. The state is t.
    """

    def grad(params: Tree, t: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        g_p, _ = oracle(_sam_point(params, g, rho_at(t)), x, y)
        return T.add(g_p, _minus_proj(g, g_p), alpha=-alpha), t + 1, loss

    return Pipeline(lambda params: 0, grad)


def looksam(oracle: Oracle, rho: float, k: int, alpha: float, layerwise: bool = False) -> Pipeline:
    """LookSAM (Liu et al., CVPR 2022, "Towards efficient and scalable sharpness-aware minimization").

    Every k-th step (t = 0, k, 2k, …) it is SAM, and it keeps g_v = g_s − (g_s·g/‖g‖²) g, the part of SAM's
    gradient g_s = ∇L_B(w + ρ g/‖g‖) orthogonal to that step's g = ∇L_B(w). The steps in between cost one pass:
    descend along g + α (‖g‖/‖g_v‖) g_v with the fresh g and the kept g_v. k = 1 is SAM. ``layerwise``: the
    projection and the scale ‖g‖/‖g_v‖ per parameter tensor (pytorch-optimizer 4.1.0 computes them so); the
    paper's Algorithm 1 treats the gradient as one vector (the default). The state is (t, g_v).
    """

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        t, g_v = state
        g, loss = oracle(params, x, y)
        if t % k == 0 or g_v is None:
            g_s, _ = oracle(_sam_point(params, g, rho), x, y)
            g_v = _minus_proj_leaves(g_s, g) if layerwise else _minus_proj(g_s, g)
            return g_s, (t + 1, g_v), loss
        if layerwise:
            out = {n: g[n] + (alpha * g[n].norm() / (g_v[n].norm() + GV_EPS)) * g_v[n] for n in g}
        else:
            out = T.add(g, T.scale(g_v, alpha * T.norm(g) / (T.norm(g_v) + EPS)))
        return out, (t + 1, g_v), loss

    return Pipeline(lambda params: (0, None), grad)
