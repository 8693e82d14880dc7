"""The descent step: a stock ``torch.optim`` optimizer and schedule built from the config."""

from __future__ import annotations

import math

import torch

from ..config import Config


def swa_start_epoch(cfg: Config) -> int:
    """SWA averages after every epoch e ≥ this one (0-based): ⌊start · E⌋, at least the last epoch."""
    return min(math.floor(cfg.swa.start * cfg.train.epochs), cfg.train.epochs - 1)


def _fusable(params: list[torch.Tensor]) -> bool:
    """torch's fused SGD/Adam kernels take floating-point tensors on a CPU or a CUDA device, all on one device."""
    devices = {p.device.type for p in params}
    floating = all(p.is_floating_point() for p in params)
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and floating


def make_optimizer(
    cfg: Config, params: list[torch.Tensor], total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The descent step: SGD (momentum, Nesterov, weight decay) or Adam, constant or cosine learning rate.

    ``algorithm = "swa"`` with ``swa.lr > 0``: η_t follows the schedule until the SWA start (step ⌊start·E⌋ ·
    steps per epoch), then stays at swa.lr (the paper's constant SWA learning rate); the cosine then decays over
    the whole run as usual (η_t = η_0 (1 + cos(π t/T))/2, the closed form of CosineAnnealingLR)."""
    o = cfg.optim
    opt: torch.optim.Optimizer
    # torch's fused kernel: one pass over (w, g, momentum) per tensor instead of three, the same update (its time
    # is the "optimizer" part of benchmarks/dp_parts.py)
    fused = {"fused": True} if _fusable(params) else {}
    if o.name == "sgd":
        opt = torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
            **fused,
        )
    else:
        opt = torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, **fused)
    total = max(total_steps, 1)
    if cfg.algorithm == "swa" and cfg.swa.lr > 0:
        start = swa_start_epoch(cfg) * (total // cfg.train.epochs)
        ratio = cfg.swa.lr / o.lr
        cosine = o.schedule == "cosine"

        def factor(t: int) -> float:
            if t >= start:
                return ratio
            return 0.5 * (1.0 + math.cos(math.pi * t / total)) if cosine else 1.0

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
    sched = None
    if o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return opt, sched


def lr_values(cfg: Config, total_steps: int) -> list[float]:
    """η_t for t = 0 … total_steps − 1: what ``make_optimizer``'s scheduler gives a run of that many steps."""
    dummy = torch.zeros(1, requires_grad=True)  # no gradient: optimizer.step() is a no-op
    opt, sched = make_optimizer(cfg, [dummy], total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        if sched is not None:
            opt.step()
            sched.step()
    return lrs
