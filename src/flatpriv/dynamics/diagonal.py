"""The diagonal linear network of paper 3 (Sander et al. 2024, §4; science.md §5.1), every seed at once.

Model β = w₊² − w₋² (⊙ squares), square loss L(β) = (1/2n)‖Xβ − y‖², initialisation w₀,± = α·1. With
g = ∇_β L_B(β) the gradient of a batch B (all n examples for GD, one uniformly drawn example for SGD):

    w₊ ← w₊ − 2γ w₊ ⊙ g + γ σ_t Z₊ ⊙ w₊,        w₋ ← w₋ + 2γ w₋ ⊙ g − γ σ_t Z₋ ⊙ w₋,

with Z₊, Z₋ ~ N(0, I_d) independent and σ_t = 2σ √L(w_t) (Noisy-SGD: noise that vanishes at interpolation);
σ = 0 is SGD (or GD). Step γ = 1/(1.3‖X̄X̄ᵀ‖₂), X̄ = X/√n. Under gradient flow the product w₊ ⊙ w₋ stays α²; the
discrete steps and the noise shrink it, and α∞ = √(w₊ ⊙ w₋) at the end is the *effective initialisation* the
paper's theory describes: the limit solves min φ_{α∞}(β) s.t. Xβ = y (hyperbolic entropy, Woodworth et al. 2020),
which favours sparse β as α∞ → 0.

All S seeds × M noise levels are one float64 tensor computation. Seed s draws its batches from one generator and
its noise from another, in fixed-size blocks, so a seed's trajectory does not depend on which other seeds run
beside it, and every noise level of a seed follows the same sequence of examples (σ = 0 is SGD exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FlatprivError

F64 = torch.float64


@dataclass(frozen=True)
class Problem:
    """S noiseless sparse regression problems, one per seed: X [S, n, d], y = Xβ* [S, n], β* [S, d]."""

    X: torch.Tensor
    y: torch.Tensor
    beta_star: torch.Tensor
    seeds: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        s, n, d = self.X.shape
        return s, n, d


def _generator(seed: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def sparse_problem(seeds: Sequence[int], n: int = 40, d: int = 100, sparsity: int = 5, value: float = 0.2) -> Problem:
    """x_i ~ N(0, I_d); β* has ``sparsity`` entries ±``value`` (random support and signs), y = Xβ* (noiseless)."""
    if not 0 < sparsity <= d or n < 1:
        raise FlatprivError(f"sparsity {sparsity}, n {n}, d {d}: need 0 < sparsity ≤ d and n ≥ 1")
    xs, bs = [], []
    for seed in seeds:
        g = _generator(seed, 0)
        x = torch.randn(n, d, generator=g, dtype=F64)
        beta = torch.zeros(d, dtype=F64)
        support = torch.randperm(d, generator=g)[:sparsity]
        signs = torch.randint(0, 2, (sparsity,), generator=g).to(F64) * 2 - 1
        beta[support] = value * signs
        xs.append(x)
        bs.append(beta)
    X, beta_star = torch.stack(xs), torch.stack(bs)
    return Problem(X, torch.einsum("snd,sd->sn", X, beta_star), beta_star, tuple(seeds))


def step_size(X: torch.Tensor) -> torch.Tensor:
    """γ = 1/(1.3‖X̄X̄ᵀ‖₂) per problem, X̄ = X/√n (science.md §5.1): X [S, n, d] -> [S]."""
    n = X.shape[-2]
    return 1.0 / (1.3 * torch.linalg.matrix_norm(X / n**0.5, ord=2) ** 2)


def dln_loss(beta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L(β) = (1/2n)‖Xβ − y‖² for β [S, M, d] against problem s: -> [S, M]."""
    r = torch.einsum("smd,snd->smn", beta, X) - y[:, None, :]
    return 0.5 * (r**2).mean(-1)


@dataclass
class DLNRun:
    """A finished run: final w₊, w₋, β [S, M, d]; ‖β_t − β*‖² and L(β_t) [S, M, R] at ``steps_recorded``."""

    w_plus: torch.Tensor
    w_minus: torch.Tensor
    beta: torch.Tensor
    distance: torch.Tensor
    loss: torch.Tensor
    steps_recorded: np.ndarray
    gamma: torch.Tensor  # [S]

    @property
    def final_distance(self) -> torch.Tensor:
        """‖β_T − β*‖² [S, M]."""
        return self.distance[..., -1]


def _draws(
    gens: list[tuple[torch.Generator, torch.Generator]], k: int, m: int, batch: int | None, n: int, d: int, noisy: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Seed s's next block of k steps: batch indices [S, k, b] from its batch stream, shared by every noise level
    (so σ rows are paired on one sample path, and σ = 0 is SGD exactly), and noise [S, k, M, 2, d] from its
    noise stream."""
    idx = z = None
    if batch is not None:
        idx = torch.stack([torch.randint(0, n, (k, batch), generator=g) for g, _ in gens])
    if noisy:
        z = torch.stack([torch.randn(k, m, 2, d, generator=g, dtype=F64) for _, g in gens])
    return idx, z


def train_dln(
    problem: Problem,
    alpha: float | torch.Tensor,
    steps: int,
    sigmas: Sequence[float] = (0.0,),
    batch: int | None = None,
    record_every: int = 100,
    gamma: torch.Tensor | None = None,
    block: int = 512,
) -> DLNRun:
    """Train the DLN on every problem for each noise level σ_m of ``sigmas`` (rows m): GD when ``batch`` is None,
    else SGD with ``batch`` examples drawn uniformly (with replacement) per step; σ_m > 0 adds Noisy-SGD's noise.

    ``alpha``: the initial scale, a float or a tensor broadcastable to [S, M, d] (per-coordinate α∞ checks).
    """
    s, n, d = problem.shape
    m = len(sigmas)
    if steps < 1 or record_every < 1 or (batch is not None and not 1 <= batch <= n):
        raise FlatprivError(f"steps {steps}, record_every {record_every}, batch {batch}: out of range")
    sig = torch.tensor(list(sigmas), dtype=F64)
    if not torch.isfinite(sig).all() or (sig < 0).any():
        raise FlatprivError(f"sigmas {list(sigmas)}: each σ must be finite and ≥ 0")
    gam = (step_size(problem.X) if gamma is None else gamma).to(F64).view(s, 1, 1)
    init = torch.as_tensor(alpha, dtype=F64)
    wp = torch.ones(s, m, d, dtype=F64) * init
    wm = wp.clone()
    X, y = problem.X, problem.y
    noisy = bool((sig > 0).any())
    gens = [(_generator(seed, 1), _generator(seed, 4)) for seed in problem.seeds]
    rows = torch.arange(s).view(s, 1)
    dist, losses, recorded = [], [], []
    idx = z = None
    for t in range(steps):
        j = t % block
        if j == 0 and (batch is not None or noisy):
            idx, z = _draws(gens, min(block, steps - t), m, batch, n, d, noisy)
        beta = wp**2 - wm**2
        r = torch.einsum("smd,snd->smn", beta, X) - y[:, None, :]  # [S, M, n]
        if batch is None:
            g = torch.einsum("smn,snd->smd", r, X) / n
        else:
            i = idx[:, j]  # type: ignore[index]  # [S, b]
            rb = r.gather(-1, i[:, None, :].expand(s, m, -1))  # [S, M, b]
            g = torch.einsum("smb,sbd->smd", rb, X[rows, i]) / batch
        if t % record_every == 0:
            recorded.append(t)
            dist.append(((beta - problem.beta_star[:, None]) ** 2).sum(-1))
            losses.append(0.5 * (r**2).mean(-1))
        step_p, step_m = 1 - 2 * gam * g, 1 + 2 * gam * g
        if noisy:
            sigma_t = (2 * sig * (0.5 * (r**2).mean(-1)).sqrt()).unsqueeze(-1)  # [S, M, 1]
            zz = z[:, j]  # type: ignore[index]  # [S, M, 2, d]
            step_p = step_p + gam * sigma_t * zz[:, :, 0]
            step_m = step_m - gam * sigma_t * zz[:, :, 1]
        wp, wm = wp * step_p, wm * step_m
    beta = wp**2 - wm**2
    if not torch.isfinite(beta).all():
        bad = sorted({float(sig[k]) for k in range(m) if not torch.isfinite(beta[:, k]).all()})
        raise FlatprivError(f"the diagonal network diverged at σ ∈ {bad} (α {alpha}, batch {batch}): lower γ or β*")
    recorded.append(steps)
    dist.append(((beta - problem.beta_star[:, None]) ** 2).sum(-1))
    losses.append(dln_loss(beta, X, y))
    return DLNRun(wp, wm, beta, torch.stack(dist, -1), torch.stack(losses, -1), np.array(recorded), gam.view(s))


def alpha_infinity(run: DLNRun) -> torch.Tensor:
    """α∞ = √(w₊ ⊙ w₋) per coordinate [S, M, d]: the effective initialisation scale (α under gradient flow)."""
    return (run.w_plus * run.w_minus).clamp_min(0).sqrt()


def gd_limit(problem: Problem, alpha: float | torch.Tensor, steps: int, gamma: torch.Tensor | None = None) -> DLNRun:
    """GD from w₀,± = α (a float or per-coordinate [S, M, d]): the interpolator min φ_α(β) s.t. Xβ = y in the limit."""
    m = 1 if not isinstance(alpha, torch.Tensor) or alpha.dim() < 2 else alpha.shape[1]
    return train_dln(problem, alpha, steps, sigmas=[0.0] * m, batch=None, record_every=steps, gamma=gamma)
