"""Linear least squares under SGD and Noisy-SGD (paper 3, §3; science.md §5.2): the stationary law and a bound.

flatpriv's discretisation, batch 1 (i uniform in 1..n), Z ~ N(0, I_d):

    θ ← θ − γ (x_i (x_iᵀθ − y_i) + σ_t Z).

**Under-parameterised** (n > d, y = Xθ* + noise), σ_t = σ. With δ = θ − θ_LS, r_i = y_i − x_iᵀθ_LS and
A_i = I − γ x_i x_iᵀ, δ ← A_i δ + γ x_i r_i − γσZ, and Σ_j x_j r_j = 0, so the stationary mean of δ is 0 and its
covariance M solves the discrete Lyapunov equation (exact, no approximation)

    M = (1/n) Σ_i A_i M A_i + γ² (C + σ² I),      C = (1/n) Σ_i r_i² x_i x_iᵀ.

Dropping the O(γ²) term (1/n)Σ γ² x_i x_iᵀ M x_i x_iᵀ leaves H M + M H = γ (C + σ² I) with H = X̄ᵀX̄ = XᵀX/n; with
homoscedastic residuals C ≈ ε̂² H (ε̂² = ‖r‖²/n) this is M ≈ (γ ε̂²/2) I + (γ/2) σ² H⁻¹. So the paper's data-dependent
term c·σ²(X̄ᵀX̄)⁻¹ has c = γ/2 per step here, i.e. c = 1/2 once the noise is counted per unit time (σ² γ per step of
length γ), the usual Lyapunov convention, not the 1/4 the paper prints (docs/studies.md has the derivation).

**Over-parameterised** (n < d, y = Xβ* interpolable), σ_t = σ √L(θ_t) with L(θ) = (1/2n)‖Xθ − y‖²: coupling the
noisy run θ_t and SGD β_t on the same indices, e ← A_i e − γσ_t Z and ‖A_i‖ ≤ 1 when γ‖x_i‖² ≤ 2, so
E‖θ_T − β_T‖² ≤ γ² d σ² Σ_t E L(θ_t) = γ d σ² ∫ L(θ_s) ds (s = γt): the bound of science.md §5.2 with L evaluated
on the noisy run, which is what this discretisation guarantees; the study reports it with L(β_s) too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import solve_continuous_lyapunov

from ..errors import FlatprivError
from .diagonal import F64, _generator


@dataclass(frozen=True)
class LSProblem:
    X: torch.Tensor  # [n, d]
    y: torch.Tensor  # [n]
    theta_ls: torch.Tensor  # [d]: the least-squares solution (under-parameterised) or β* (over-parameterised)

    @property
    def residuals(self) -> torch.Tensor:
        return self.y - self.X @ self.theta_ls

    @property
    def hessian(self) -> torch.Tensor:
        return self.X.T @ self.X / self.X.shape[0]


def ls_problem(n: int, d: int, noise: float, seed: int) -> LSProblem:
    """x_i ~ N(0, I_d), θ* ~ N(0, I_d), y = Xθ* + noise·N(0, 1); θ_LS by lstsq (β* itself when n ≤ d, noise 0)."""
    g = _generator(seed, 2)
    X = torch.randn(n, d, generator=g, dtype=F64)
    theta = torch.randn(d, generator=g, dtype=F64)
    y = X @ theta + noise * torch.randn(n, generator=g, dtype=F64)
    theta_ls = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1) if n > d else theta
    return LSProblem(X, y, theta_ls)


def exact_covariance(p: LSProblem, gamma: float, sigma: float) -> np.ndarray:
    """The stationary covariance M of δ = θ − θ_LS under flatpriv's batch-1 (Noisy-)SGD: the exact solution of
    M = (1/n) Σ A_i M A_i + γ²(C + σ²I) as a d²×d² linear system (small d)."""
    X, r = p.X.numpy(), p.residuals.numpy()
    n, d = X.shape
    if d > 40:
        raise FlatprivError(f"d = {d}: the exact d²×d² stationary system is for small d (≤ 40)")
    eye = np.eye(d)
    op = np.zeros((d * d, d * d))
    for x in X:
        a = eye - gamma * np.outer(x, x)
        op += np.kron(a, a)
    c = (X * r[:, None] ** 2).T @ X / n
    rhs = gamma**2 * (c + sigma**2 * eye)
    m = np.linalg.solve(np.eye(d * d) - op / n, rhs.reshape(-1))
    m = m.reshape(d, d)
    return (m + m.T) / 2


def first_order_covariance(p: LSProblem, gamma: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """First order in γ: the solution of HM + MH = γ(C + σ²I), and its homoscedastic form (γε̂²/2)I + (γ/2)σ²H⁻¹."""
    X, r = p.X.numpy(), p.residuals.numpy()
    n, d = X.shape
    h = X.T @ X / n
    c = (X * r[:, None] ** 2).T @ X / n
    lyap = solve_continuous_lyapunov(h, gamma * (c + sigma**2 * np.eye(d)))
    eps2 = float((r**2).mean())
    return lyap, gamma / 2 * (eps2 * np.eye(d) + sigma**2 * np.linalg.inv(h))


@dataclass
class LSRun:
    """Time-averaged covariance of δ per chain [chains, d, d] (under-parameterised), or the coupled gap."""

    cov_per_chain: np.ndarray | None = None
    gap: np.ndarray | None = None  # E‖θ_t − β_t‖² over chains at ``steps`` [R]
    bound_noisy: np.ndarray | None = None  # γ d σ² ∫ L(θ_s) ds
    bound_sgd: np.ndarray | None = None  # γ d σ² ∫ L(β_s) ds
    steps: np.ndarray | None = None


def simulate_ls(
    p: LSProblem,
    gamma: float,
    sigma: float,
    steps: int,
    chains: int,
    seed: int,
    burn_in: int = 0,
    coupled: bool = False,
    record_every: int = 100,
) -> LSRun:
    """Run ``chains`` independent chains of batch-1 SGD (σ = 0) or Noisy-SGD from θ_LS (under-parameterised:
    returns each chain's time-averaged covariance of θ − θ_LS after ``burn_in``) or, with ``coupled``, from 0 with
    σ_t = σ√L(θ_t) beside an SGD run on the same indices (returns E‖θ_t − β_t‖² and both bounds along the run)."""
    n, d = p.X.shape
    if steps <= burn_in or chains < 2:
        raise FlatprivError(f"steps {steps} ≤ burn_in {burn_in} or chains {chains} < 2")
    g = _generator(seed, 3)
    X, y = p.X, p.y
    theta = torch.zeros(chains, d, dtype=F64) if coupled else p.theta_ls.repeat(chains, 1)
    beta = theta.clone()
    acc = torch.zeros(chains, d, d, dtype=F64)
    gaps, b_noisy, b_sgd, rec = [], [], [], []
    int_noisy = torch.zeros(chains, dtype=F64)
    int_sgd = torch.zeros(chains, dtype=F64)
    block = 1000
    for t0 in range(0, steps, block):
        k = min(block, steps - t0)
        idx = torch.randint(0, n, (k, chains), generator=g)
        z = torch.randn(k, chains, d, generator=g, dtype=F64)
        for j in range(k):
            t = t0 + j
            x = X[idx[j]]  # [chains, d]
            resid = (x * theta).sum(-1) - y[idx[j]]
            if coupled:
                loss = 0.5 * ((theta @ X.T - y) ** 2).mean(-1)
                loss_b = 0.5 * ((beta @ X.T - y) ** 2).mean(-1)
                int_noisy += gamma * loss
                int_sgd += gamma * loss_b
                sig_t = sigma * loss.sqrt().unsqueeze(-1)
                beta = beta - gamma * x * ((x * beta).sum(-1) - y[idx[j]]).unsqueeze(-1)
            else:
                sig_t = sigma
            theta = theta - gamma * (x * resid.unsqueeze(-1) + sig_t * z[j])
            if not coupled and t >= burn_in:
                delta = theta - p.theta_ls
                acc += delta.unsqueeze(-1) * delta.unsqueeze(-2)
            if coupled and (t + 1) % record_every == 0:
                rec.append(t + 1)
                gaps.append(float(((theta - beta) ** 2).sum(-1).mean()))
                b_noisy.append(float(gamma * d * sigma**2 * int_noisy.mean()))
                b_sgd.append(float(gamma * d * sigma**2 * int_sgd.mean()))
    if coupled:
        return LSRun(gap=np.array(gaps), bound_noisy=np.array(b_noisy), bound_sgd=np.array(b_sgd), steps=np.array(rec))
    return LSRun(cov_per_chain=(acc / (steps - burn_in)).numpy())
