"""The SAM family as one small object: where the ascent direction comes from and how it is shaped.

``Ascent(direction, source)``: ``direction`` is a Transform mapping a gradient to the perturbation ε;
``source`` says which gradient feeds it: ``"current"`` (a fresh gradient at w on the same minibatch) or
``"previous"`` (the last released gradient, DP-SAT, so no extra privacy cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .transforms import Transform, adaptive_scale, chain, ema, ema_residual, normalize, scale


@dataclass(frozen=True)
class Ascent:
    """Where SAM's perturbation comes from: ``direction`` maps a gradient to ε, ``source`` says which gradient.

    >>> import torch
    >>> asc = vasso(rho=0.1, theta=0.5)  # d_1 = g_1, then ε = ρ d/‖d‖
    >>> eps, state = asc.direction.update({"w": torch.tensor([0.0, 2.0])}, asc.direction.init({}), {})
    >>> eps["w"], asc.source
    (tensor([0.0000, 0.1000]), 'current')
    """

    direction: Transform
    source: Literal["current", "previous"] = "current"


def sam(rho: float) -> Ascent:
    """SAM (Foret et al. 2021): ε = ρ · g / (‖g‖₂ + 1e-12), then descend along ∇L_B(w + ε)."""
    return Ascent(normalize(radius=rho))


def vasso(rho: float, theta: float) -> Ascent:
    """VaSSO (Li & Giannakis 2023): d_t = (1 − θ) d_{t−1} + θ g_t (d_1 = g_1), ε_t = ρ · d_t / ‖d_t‖."""
    return Ascent(chain(ema(theta), normalize(radius=rho)))


def asam(rho: float, eta: float) -> Ascent:
    """ASAM (Kwon et al. 2021): ε = ρ · T_w² g / ‖T_w g‖ with T_w = |w| + η, composed as T ∘ normalize ∘ T."""
    return Ascent(chain(adaptive_scale(eta), normalize(), adaptive_scale(eta), scale(rho)))


def friendly(rho: float, sigma: float, lam: float) -> Ascent:
    """FriendlySAM (Li et al., CVPR 2024): m_t = λ m_{t−1} + (1 − λ) g_t (m_1 = g_1), d_t = g_t − σ m_{t−1}
    (d_1 = g_1), ε_t = ρ · d_t / ‖d_t‖: the ascent along the batch-specific part of the gradient only."""
    return Ascent(chain(ema_residual(sigma, lam), normalize(radius=rho)))
