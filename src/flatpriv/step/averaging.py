"""Stochastic weight averaging (SWA, Izmailov et al., UAI 2018, "Averaging weights leads to wider optima and
better generalization") for single runs and pools.

After every epoch e ≥ e₀ = ⌊swa.start · E⌋ (0-based) the running mean w̄ ← w̄ + (w − w̄)/(n + 1), n ← n + 1 takes
in the weights w the row underneath (``swa.base``) has reached; w̄ is what the run evaluates and saves. A single
run keeps w̄ in ``torch.optim.swa_utils.AveragedModel`` itself; a pool keeps the same running mean per model on its
stacked tensors (model k averages at the end of its own epochs, which differ between models under Bernoulli
masks), so a pool member's w̄ equals its single run's AveragedModel (tests/test_sam_variants.py). The models
have no BatchNorm, so no ``update_bn`` pass is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from ..config import Config
from ..tree import Tree
from .optim import swa_start_epoch


class RunAverage:
    """SWA of one run: ``AveragedModel`` updated after every epoch from e₀ on."""

    def __init__(self, cfg: Config, model: torch.nn.Module) -> None:
        self.start = swa_start_epoch(cfg)
        self.swa = AveragedModel(model)

    def after_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        """``epoch`` (0-based) has just ended with ``model``'s weights."""
        if epoch >= self.start:
            self.swa.update_parameters(model)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the run evaluates: the averaged model once it holds a snapshot, the trained one before."""
        return self.swa.module if int(self.swa.n_averaged) > 0 else model

    def state_dict(self) -> dict[str, Any]:
        return self.swa.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.swa.load_state_dict(state)


class PoolAverage:
    """SWA of K stacked models: model k, with ``steps_per_epoch[k]`` steps per epoch, averages after global step t
    when t + 1 ends one of its epochs e ≥ e₀."""

    def __init__(self, cfg: Config, params: Tree, steps_per_epoch: Sequence[int]) -> None:
        self.start = swa_start_epoch(cfg)
        self.epochs = cfg.train.epochs
        self.spe = list(steps_per_epoch)
        self.n = [0] * len(self.spe)
        self.avg = {k: v.detach().clone() for k, v in params.items()}

    @torch.no_grad()
    def after_step(self, t: int, params: Tree) -> None:
        done = t + 1
        due = [done % s == 0 and self.start < done // s <= self.epochs for s in self.spe]
        if not any(due):
            return
        w = [1.0 / (n + 1) if d else 0.0 for n, d in zip(self.n, due)]
        self.n = [n + int(d) for n, d in zip(self.n, due)]
        for k, v in params.items():
            weight = torch.tensor(w, dtype=v.dtype, device=v.device).view(-1, *[1] * (v.dim() - 1))
            self.avg[k] = torch.lerp(self.avg[k], v.detach(), weight)

    def averaged(self) -> Tree:
        return self.avg
