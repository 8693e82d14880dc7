"""Private gradient pipelines: every release goes through one privatizer that records it in the ledger.

    g̃ = ( Σ_{i∈B} clip_C(∇ℓ_i(w')) + N(0, σ²C² I) ) / (q·N)          (Abadi et al. 2016)

divided by the EXPECTED batch size q·N, never |B|. ε is computed from the ledger, so DP-SAM's two releases
per step are charged because they happen. DP-SAT (Park et al. 2023) and DP-VaSSO-SAT perturb along the
previous release, which is post-processing: one release per step, ε identical to DP-SGD.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from . import sharpness
from . import tree as T
from .clipping import ClippedOracle
from .config import Config
from .errors import FlatprivError
from .gradients import Oracle
from .privacy.accounting import Ledger, calibrate_noise, epsilon_from_ledger
from .privacy.sampling import gaussian_like, make_generator
from .tree import Tree

State = Any
NOISY_NOTE = ("noisy_sgd does not clip, so its sensitivity is unbounded: it is not differentially private and has "
              "no epsilon")


@dataclass
class Privatizer:
    """Adds N(0, σ²C²I) to a clipped sum of sensitivity C, divides by q·N and records (σ, q) in the ledger."""

    noise_multiplier: float  # σ
    sample_rate: float  # q
    expected_batch_size: float  # q·N
    generator: torch.Generator
    ledger: Ledger

    def release(self, clipped_sum: Tree, sensitivity: float) -> Tree:
        noise = gaussian_like(clipped_sum, self.noise_multiplier * sensitivity, self.generator)
        self.ledger.record(self.noise_multiplier, self.sample_rate)
        return T.scale(T.add(clipped_sum, noise), 1.0 / self.expected_batch_size)


def _clipped(oracle: ClippedOracle, params: Tree, x: torch.Tensor, y: torch.Tensor,
             physical_batch_size: int) -> tuple[Tree, torch.Tensor]:
    """Σ clip_C(∇ℓ_i) over micro-batches of at most ``physical_batch_size``; the weights are never touched."""
    n = len(y)
    step = physical_batch_size if 0 < physical_batch_size < n else max(n, 1)
    total: Tree | None = None
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, max(n, 1), step):
        g, info = oracle(params, x[i:i + step], y[i:i + step])
        total = g if total is None else T.add(total, g)
        loss_sum = loss_sum + info.loss * info.batch_size
    assert total is not None
    return total, loss_sum / max(n, 1)


def dp_gradient(oracle: ClippedOracle, priv: Privatizer, asc: sharpness.Ascent | None,
                physical_batch_size: int = 0):
    """DP-SGD (asc None), DP-SAM (source 'current': a privatised ascent gradient, 2 releases per step),
    DP-SAT / DP-VaSSO-SAT (source 'previous': the last release feeds the direction, 1 release per step).

    Returns ``(init, grad)``; for 'previous' the state is (direction state, last release or None), so ε_0 = 0.
    """

    def clip(params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        return _clipped(oracle, params, x, y, physical_batch_size)

    def init(params: Tree) -> State:
        if asc is None:
            return ()
        return (asc.direction.init(params), None)

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        if asc is None:
            s, loss = clip(params, x, y)
            return priv.release(s, oracle.sensitivity), state, loss
        dir_state, previous = state
        if asc.source == "current":
            s, loss = clip(params, x, y)
            g_asc = priv.release(s, oracle.sensitivity)  # release 1
            eps, dir_state = asc.direction.update(g_asc, dir_state, params)
            s, _ = clip(T.add(params, eps), x, y)
            return priv.release(s, oracle.sensitivity), (dir_state, None), loss  # release 2
        if previous is None:  # ε_0 = 0: the first step is exactly DP-SGD's
            point = params
        else:
            eps, dir_state = asc.direction.update(previous, dir_state, params)
            point = T.add(params, eps)
        s, loss = clip(point, x, y)
        g = priv.release(s, oracle.sensitivity)
        return g, (dir_state, T.detach(g)), loss

    return init, grad


def noisy_gradient(oracle: Oracle, noise_multiplier: float, batch_size: int, generator: torch.Generator):
    """Noisy-SGD (Sander et al. 2024): g = (1/B) Σ ∇ℓ_i + N(0, (σ/B)² I). No clipping: NOT differentially
    private (unbounded sensitivity), so no ε is ever reported for it."""
    std = noise_multiplier / batch_size

    def grad(params: Tree, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[Tree, State, torch.Tensor]:
        g, loss = oracle(params, x, y)
        return T.add(g, gaussian_like(g, std, generator)), state, loss

    return (lambda params: ()), grad


@dataclass
class PrivateRun:
    """Everything a DP (or Noisy-SGD) run needs besides the model: rates, σ, generators and the ledger."""

    sample_rate: float  # q
    noise_multiplier: float  # σ
    steps_per_epoch: int
    privatizer: Privatizer
    sampler: torch.Generator  # Poisson sampling (secret, like the noise)
    accountant: str
    delta: float
    accounted: bool  # False for Noisy-SGD: it releases noise but has no ε

    @property
    def generator(self) -> torch.Generator:
        return self.privatizer.generator

    def epsilon(self) -> float | None:
        if not self.accounted:
            return None
        return epsilon_from_ledger(self.privatizer.ledger, self.delta, self.accountant)

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": self.privatizer.ledger.to_dict(), "noise": self.generator.get_state(),
                "sampler": self.sampler.get_state()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.privatizer.ledger = Ledger.from_dict(d["ledger"])
        self.generator.set_state(d["noise"])
        self.sampler.set_state(d["sampler"])


def setup_privacy(cfg: Config, private: bool, releases: int, noisy: bool, n: int,
                  device: torch.device) -> PrivateRun | None:
    """Validate the privacy settings for this algorithm and build its run state; refuse what would break DP."""
    p = cfg.privacy
    if not (private or noisy):
        if p.target_epsilon > 0 or p.noise_multiplier > 0:
            raise FlatprivError(f"algorithm = '{cfg.algorithm}' is not private: privacy.target_epsilon / "
                                "noise_multiplier need dpsgd, dpsam, dpsat or dpvasso_sat")
        return None
    if noisy and p.target_epsilon > 0:
        raise FlatprivError("noisy_sgd has no clipping and so no ε: set privacy.noise_multiplier, not "
                            "privacy.target_epsilon (use dpsgd for a privacy guarantee)")
    if private and p.target_epsilon > 0 and p.noise_multiplier > 0:
        raise FlatprivError("give privacy.target_epsilon or privacy.noise_multiplier, not both")
    if private and p.target_epsilon == 0 and p.noise_multiplier == 0:
        raise FlatprivError(f"{cfg.algorithm} needs noise: set privacy.target_epsilon (σ is calibrated) or "
                            "privacy.noise_multiplier > 0")
    q = p.sample_rate if p.sample_rate > 0 else cfg.train.batch_size / n
    if not 0 < q <= 1:
        raise FlatprivError(f"sample rate q = {q:.4g} is outside (0, 1]: lower train.batch_size or set "
                            "privacy.sample_rate")
    steps_per_epoch = max(1, round(1 / q)) if private else math.ceil(n / cfg.train.batch_size)
    sigma = p.noise_multiplier
    if private and p.target_epsilon > 0:
        sigma = calibrate_noise(p.target_epsilon, q, steps_per_epoch * cfg.train.epochs, p.delta, p.accountant,
                                releases_per_step=releases)
    if private and p.delta >= 1.0 / n:
        warnings.warn(f"privacy.delta = {p.delta:g} ≥ 1/N = {1 / n:.3g}: such a δ allows leaking an example",
                      stacklevel=2)
    if p.noise_seed >= 0:
        warnings.warn("privacy.noise_seed is fixed: seeded noise and sampling are for reproducible research "
                      "only, not for a deployed privacy guarantee", stacklevel=2)
    noise = make_generator(p.noise_seed, device)
    sampler = make_generator(p.noise_seed + 1 if p.noise_seed >= 0 else -1, device)
    priv = Privatizer(sigma, q, q * n, noise, Ledger([]))
    return PrivateRun(q, sigma, steps_per_epoch, priv, sampler, p.accountant, p.delta, accounted=private)
