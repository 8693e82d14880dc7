"""The variance of the SAM family's perturbation direction along training (VaSSO's claim, Li & Giannakis 2023).

SAM perturbs along the minibatch gradient g_t, VaSSO along d_t = (1 − θ) d_{t−1} + θ g_t. VaSSO's paper argues
that g_t's variance makes SAM's adversary "friendly" and that d_t suppresses it: for i.i.d. gradient noise the
stationary variance is Var(d_t) = θ/(2 − θ) · Var(g_t). :func:`direction_trace` trains one run exactly as
``flatpriv train`` would (same set-up, batches and steps: a test checks the final weights are equal) with taps
(:func:`flatpriv.step.transforms.observe`) on g_t and, for VaSSO, d_t, and reports per epoch (the window of that
epoch's steps t = 1..n_w):

- ``variance``       tr Cov(v) = (1/n_w) Σ ‖v_t‖² − ‖(1/n_w) Σ v_t‖²  (v = g_t or d_t)
- ``unit_variance``  tr Cov(u) = 1 − ‖(1/n_w) Σ u_t‖², u_t = v_t/‖v_t‖: the spread of the direction ε_t/ρ
  itself, in [0, 1] (0: the same direction every step; ≈ 1: directions with no common part)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import FlatprivError
from ..models import predict
from ..step.ascent import Ascent
from ..step.oracles import mean_grad
from ..step.pipelines import ascent
from ..step.transforms import chain, ema, normalize, observe
from ..train import prepare
from ..tree import Tree


class Window:
    """Running sums over a window of steps: Σv, Σ‖v‖², Σv/‖v‖ and the count (float64, one flat vector)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        self.squares = 0.0
        self.norms = 0.0
        self.count = 0

    def add(self, tree: Tree) -> None:
        v = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tree.values()])
        n = float(v.norm())
        if self.total is None:
            self.total, self.unit = torch.zeros_like(v), torch.zeros_like(v)
        assert self.unit is not None
        self.total += v
        self.unit += v / max(n, 1e-300)
        self.squares += n * n
        self.norms += n
        self.count += 1

    def close(self) -> dict[str, float]:
        """The window's statistics (see the module docstring); the window starts again empty."""
        if self.count == 0 or self.total is None or self.unit is None:
            out = {"variance": math.nan, "unit_variance": math.nan, "mean_norm": math.nan, "steps": 0}
        else:
            k = self.count
            mean_sq = float((self.total / k).pow(2).sum())
            out = {
                "variance": self.squares / k - mean_sq,
                "unit_variance": 1.0 - float((self.unit / k).pow(2).sum()),
                "mean_norm": self.norms / k,
                "steps": k,
            }
        self.__init__()  # type: ignore[misc]
        return out


def tapped_direction(cfg: Config, windows: dict[str, Window]) -> Ascent:
    """The row's ascent with taps: ``g`` sees g_t (SAM and VaSSO), ``d`` sees VaSSO's d_t."""
    sh = cfg.sharpness
    if cfg.algorithm == "sam":
        return Ascent(chain(observe(windows["g"].add), normalize(radius=sh.rho)))
    if cfg.algorithm == "vasso":
        return Ascent(
            chain(observe(windows["g"].add), ema(sh.theta), observe(windows["d"].add), normalize(radius=sh.rho))
        )
    raise FlatprivError(f"direction trace: algorithm = '{cfg.algorithm}' has no stochastic ascent (use sam or vasso)")


def direction_trace(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` (SAM or VaSSO, non-private) and return the per-epoch statistics of g_t (and d_t), the final
    test accuracy, and the final weights' state dict under ``"weights"`` (for the equivalence test)."""
    if cfg.algorithm not in ("sam", "vasso"):
        raise FlatprivError(f"direction trace: algorithm = '{cfg.algorithm}': use sam or vasso")
    s = prepare(cfg)
    names = ["g", "d"] if cfg.algorithm == "vasso" else ["g"]
    windows = {k: Window() for k in names}
    pipeline = ascent(mean_grad(s.model, F.cross_entropy), tapped_direction(cfg, windows))
    params = dict(s.model.named_parameters())
    state = pipeline.init(params)
    gen = torch.Generator().manual_seed(cfg.seed)  # the batch order flatpriv train draws for this seed
    x, y = s.data.x_train, s.data.y_train
    n, bs = len(y), cfg.train.batch_size
    per_epoch: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for _ in range(cfg.train.epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            g, state, _loss = pipeline.grad(params, state, x[idx], y[idx])
            for k, p in params.items():
                p.grad = g[k]
            s.optimizer.step()
            if s.scheduler is not None:
                s.scheduler.step()
        for k in names:
            per_epoch[k].append(windows[k].close())
    logits = predict(s.model, s.data.x_test, cfg.train.eval_batch_size)
    return {
        "algorithm": cfg.algorithm,
        "theta": cfg.sharpness.theta if cfg.algorithm == "vasso" else 1.0,
        "epochs": list(range(1, cfg.train.epochs + 1)),
        "series": {
            k: {m: [e[m] for e in v] for m in ("variance", "unit_variance", "mean_norm")} for k, v in per_epoch.items()
        },
        "test_accuracy": float((logits.argmax(1) == s.data.y_test).float().mean()),
        "weights": {k: v.detach().clone() for k, v in s.model.state_dict().items()},
    }
