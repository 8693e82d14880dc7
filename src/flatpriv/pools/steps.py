"""Models of one pool that take different numbers of steps (Bernoulli keep masks: |S_k| differs per model).

A single run on S_k takes T_k = ⌈|S_k|/B⌉·E steps (DP runs: round(1/q_k)·E) under its own cosine schedule
η_k(t) over T_k. The pool runs t = 0 … max_k T_k − 1 for all models at once and reproduces each model's own
schedule by rescaling its displacement: every stock update (SGD with momentum, Nesterov and L2 weight decay;
Adam) is Δw = −η·u(g, optimizer state) with u independent of η, so stepping the stacked optimizer at η = 1 and
setting w_k ← w_k + η_k(t)·Δw_k is model k's own step. η_k(t) = 0 once t ≥ T_k, which freezes model k
(its optimizer state may still change, but it is never used again). When every model is on the same step of the
same schedule (exact keep masks) the optimizer simply runs at that η, with no rescaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..config import Config
from ..step.optim import lr_values


def vmap_models(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether a pool runs its gradients as one ``vmap`` over the model axis (the design's default) or one model at
    a time. On a CPU a vmap over models turns every convolution into a grouped one, which is slow there: a pool of
    16 1-D CNNs took 31.7 s vectorized against 17.9 s model by model (docs/benchmarks.md), while MLP pools gain
    1.5–2.3× from the vmap. So: vmap on a GPU, or when the model has no convolution."""
    return device.type == "cuda" or not any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def lr_table(cfg: Config, totals: Sequence[int]) -> np.ndarray:
    """η_k(t) for t < T_k (0 after): the values ``make_optimizer``'s scheduler gives a single run of T_k steps."""
    table = np.zeros((len(totals), max(totals)))
    cache: dict[int, list[float]] = {}
    for k, total in enumerate(totals):
        if total not in cache:
            cache[total] = lr_values(cfg, total)
        table[k, :total] = cache[total]
    return table


@torch.no_grad()
def descend(
    optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: np.ndarray
) -> None:
    """One step of the stacked optimizer with learning rate ``lrs[k]`` for model k (0: model k does not move)."""
    for name, p in params.items():
        p.grad = grads[name]
    if lrs[0] > 0 and (lrs == lrs[0]).all():
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[0])
        optimizer.step()
        return
    for group in optimizer.param_groups:
        group["lr"] = 1.0
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer.step()
    for name, p in params.items():
        scale = torch.as_tensor(lrs, dtype=p.dtype, device=p.device).view(-1, *[1] * (p.dim() - 1))
        p.copy_(torch.addcmul(before[name], scale, p - before[name]))


class BatchStream:
    """Model k's minibatches exactly as a single run on S_k draws them, for all models at once.

    Each of model k's epochs is ``subset_k[torch.randperm(|S_k|, generator=g_k)]`` cut into ⌈|S_k|/B⌉ batches, the
    last one short. :meth:`block` returns the next ``steps`` global steps as positions [K, steps, B], padded with
    −1 at the end of a short batch and after model k's last step; epochs are drawn only when needed, so memory
    stays at about one epoch per model.
    """

    def __init__(
        self, subsets: Sequence[np.ndarray], batch_size: int, epochs: int, generators: Sequence[torch.Generator]
    ) -> None:
        self.subsets = [torch.as_tensor(s, dtype=torch.long) for s in subsets]
        self.batch_size = batch_size
        self.epochs = epochs
        self.generators = generators
        self.steps_per_epoch = [math.ceil(len(s) / batch_size) for s in subsets]
        self.totals = [s * epochs for s in self.steps_per_epoch]
        self._pending = [torch.empty(0, dtype=torch.long) for _ in subsets]
        self._drawn = [0] * len(subsets)

    def _epoch(self, k: int) -> torch.Tensor:
        sub = self.subsets[k]
        order = sub[torch.randperm(len(sub), generator=self.generators[k])]
        pad = self.steps_per_epoch[k] * self.batch_size - len(sub)
        return torch.cat([order, torch.full((pad,), -1, dtype=torch.long)])

    def block(self, steps: int) -> torch.Tensor:
        need = steps * self.batch_size
        rows = []
        for k in range(len(self.subsets)):
            parts = [self._pending[k]]
            have = len(parts[0])
            while have < need and self._drawn[k] < self.epochs:
                parts.append(self._epoch(k))
                self._drawn[k] += 1
                have += len(parts[-1])
            if have < need:  # model k has finished: pad its remaining steps
                parts.append(torch.full((need - have,), -1, dtype=torch.long))
            stream = torch.cat(parts)
            rows.append(stream[:need])
            self._pending[k] = stream[need:]
        return torch.stack(rows).view(len(rows), steps, self.batch_size)
