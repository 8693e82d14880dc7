"""Paper 3's models against independent references: the diagonal network's GD limit against the hyperbolic-entropy
interpolator (a 1-D minimisation by scipy), vectorized seeds against one-seed runs, σ = 0 against SGD, and least
squares' stationary covariance against simulation and the first-order formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from flatpriv.dynamics import (
    Problem,
    alpha_infinity,
    exact_covariance,
    first_order_covariance,
    ls_problem,
    simulate_ls,
    sparse_problem,
    step_size,
    train_dln,
)
from flatpriv.errors import FlatprivError


def _hyperbolic_entropy(beta: np.ndarray, alpha: float) -> float:
    """φ_α(β) = α² Σ q(β_j/α²), q(z) = 2 − √(4 + z²) + z·arcsinh(z/2) (Woodworth et al. 2020)."""
    z = beta / alpha**2
    return float(alpha**2 * np.sum(2 - np.sqrt(4 + z**2) + z * np.arcsinh(z / 2)))


@pytest.mark.parametrize("alpha", [0.3, 0.05])
def test_gd_limit_is_the_hyperbolic_entropy_interpolator(alpha):
    """d = 2, n = 1: the interpolators are a line; gradient flow from α converges to the one minimising φ_α.
    Small-step GD approximates the flow, so the limits agree to O(γ)."""
    x = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    problem = Problem(x, y, torch.zeros(1, 2, dtype=torch.float64), (0,))
    run = train_dln(problem, alpha, 40000, record_every=40000, gamma=torch.tensor([0.01], dtype=torch.float64))
    beta = run.beta[0, 0].numpy()
    assert abs(beta @ np.array([1.0, 2.0]) - 1.0) < 1e-8  # it interpolates
    base, null = np.array([1.0, 2.0]) / 5.0, np.array([2.0, -1.0])
    best = minimize_scalar(
        lambda t: _hyperbolic_entropy(base + t * null, alpha),
        bounds=(-2, 2),
        method="bounded",
        options={"xatol": 1e-12},
    )
    reference = base + best.x * null
    assert np.allclose(beta, reference, atol=3e-3), (beta, reference)
    # and it is not simply the minimum-ℓ2 interpolator (small α favours the sparser solution)
    if alpha < 0.1:
        assert np.linalg.norm(beta - base) > 0.05


def test_vectorized_seeds_equal_one_seed_runs():
    seeds = [3, 4, 5]
    together = train_dln(sparse_problem(seeds), 0.1, 300, sigmas=[0.0, 0.5, 1.0], batch=1, record_every=50)
    for k, seed in enumerate(seeds):
        alone = train_dln(sparse_problem([seed]), 0.1, 300, sigmas=[0.0, 0.5, 1.0], batch=1, record_every=50)
        # equal up to the summation order of a batched einsum (float64 round-off, never a different sample path)
        assert torch.allclose(together.beta[k], alone.beta[0], rtol=1e-9, atol=1e-13)
        assert torch.allclose(together.distance[k], alone.distance[0], rtol=1e-9, atol=1e-13)


def test_sigma_zero_noisy_sgd_is_sgd_and_noise_changes_the_path():
    p = sparse_problem([0, 1])
    sgd = train_dln(p, 0.1, 400, sigmas=[0.0], batch=1)
    noisy = train_dln(p, 0.1, 400, sigmas=[0.0, 0.5], batch=1)
    assert torch.allclose(noisy.beta[:, 0], sgd.beta[:, 0], rtol=1e-9, atol=1e-13)
    assert not torch.allclose(noisy.beta[:, 1], sgd.beta[:, 0])


def test_gradient_flow_keeps_the_product_and_noise_shrinks_it():
    """α∞ = √(w₊w₋): each GD step multiplies w₊w₋ by 1 − 4γ²g², so over the ∝ 1/γ steps to converge the shrinkage
    is O(γ): a tenth of the step gives about a tenth of it. Noise shrinks it more, the more with σ."""
    p = sparse_problem([0, 1, 2], value=0.2)
    shrink = []
    for scale, steps in ((1.0, 2000), (0.1, 20000)):
        a = alpha_infinity(train_dln(p, 0.1, steps, gamma=scale * step_size(p.X), record_every=steps))
        assert (a <= 0.1 + 1e-15).all()
        shrink.append(float(0.1 - a.min()))
    assert 0.05 < shrink[1] / shrink[0] < 0.2
    noisy = train_dln(p, 0.1, 3000, sigmas=[0.0, 0.5, 1.0], batch=1)
    geo = alpha_infinity(noisy).log().mean(-1).mean(0)
    assert geo[0] > geo[1] > geo[2]


def test_step_size_is_the_papers():
    p = sparse_problem([0])
    xbar = p.X[0].numpy() / np.sqrt(40)
    assert step_size(p.X)[0].item() == pytest.approx(1 / (1.3 * np.linalg.norm(xbar @ xbar.T, 2)), rel=1e-12)


def test_divergence_is_one_line():
    with pytest.raises(FlatprivError, match="diverged"):
        train_dln(sparse_problem([0], value=5.0), 0.1, 2000, batch=1)


def test_stationary_covariance_matches_simulation_within_sampling_error():
    p = ls_problem(40, 4, 0.5, 0)
    gamma = 0.1 / float((p.X**2).sum(1).max())
    for sigma in (0.0, 1.0):
        exact = exact_covariance(p, gamma, sigma)
        run = simulate_ls(p, gamma, sigma, steps=6000, chains=100, seed=1, burn_in=600)
        sim = run.cov_per_chain.mean(0)
        se = run.cov_per_chain.std(0, ddof=1) / np.sqrt(100)
        assert np.abs((sim - exact) / se).max() < 4.5
        first, _ = first_order_covariance(p, gamma, sigma)
        assert np.linalg.norm(first - exact) / np.linalg.norm(exact) < 0.05  # O(γ) apart


def test_the_added_noise_term_has_constant_one_half():
    """M(σ) − M(0) = γ²σ² (I − (1/n)ΣA_i⊗A_i)⁻¹ vec(I) → (γ/2)σ²H⁻¹ as γ → 0: c = 1/2 per unit γ, not 1/4."""
    p = ls_problem(30, 3, 0.3, 2)
    h_inv = np.linalg.inv(p.hessian.numpy())
    for scale, tol in ((0.1, 0.05), (0.01, 0.005)):
        gamma = scale / float((p.X**2).sum(1).max())
        diff = exact_covariance(p, gamma, 2.0) - exact_covariance(p, gamma, 0.0)
        assert np.allclose(diff / (gamma * 4.0), 0.5 * h_inv, rtol=tol, atol=tol * np.abs(h_inv).max())


def test_over_parameterised_gap_stays_under_the_bound():
    p = ls_problem(10, 30, 0.0, 0)
    gamma = 1.0 / float((p.X**2).sum(1).max())
    run = simulate_ls(p, gamma, 0.5, steps=800, chains=20, seed=0, coupled=True, record_every=100)
    assert (run.gap > 0).all() and (run.gap <= run.bound_noisy).all()
