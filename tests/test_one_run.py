"""The one-run audit (privacy/one_run.py): its p-value against a direct binomial computation, and its ε lower
bound on randomized response with a known ε."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from flatpriv.errors import FlatprivError
from flatpriv.privacy import one_run


def _direct_p(r: int, v: int, eps: float, delta: float, m: int) -> float:
    """Theorem 3.1 of Steinke, Nasr, Jagielski 2023 written out term by term."""
    q = np.exp(eps) / (1 + np.exp(eps))
    tail = binom.pmf(np.arange(v, r + 1), r, q).sum()  # P[W >= v]
    i = np.arange(1, m + 1)
    term = ((binom.cdf(v - 1, r, q) - binom.cdf(v - i - 1, r, q)) / i).max() if v else 0.0  # max_i P[v > W >= v-i]/i
    return min(tail + 2 * m * delta * term, 1.0)


@pytest.mark.parametrize(
    "r,v,eps,delta,m",
    [
        (50, 40, 1.0, 0, 50),
        (200, 150, 0.5, 1e-4, 400),
        (30, 30, 2.0, 1e-3, 60),
        (100, 0, 1.0, 1e-3, 100),
        (1000, 620, 0.3, 1e-6, 3000),
    ],
)
def test_p_value_equals_a_direct_binomial_computation(r, v, eps, delta, m):
    assert float(one_run.p_value(r, v, eps, delta, m)) == pytest.approx(
        _direct_p(r, v, eps, delta, m), rel=1e-9, abs=1e-15
    )


def test_epsilon_lower_is_where_the_p_value_crosses_alpha():
    for r, v in [(100, 80), (1000, 650), (500, 500)]:
        eps = one_run.epsilon_lower(r, v, 0.05)
        assert _direct_p(r, v, eps, 0, r) == pytest.approx(0.05, rel=1e-6)
        eps_d = one_run.epsilon_lower(r, v, 0.05, delta=1e-4, m=2 * r)
        assert eps_d <= eps and _direct_p(r, v, eps_d, 1e-4, 2 * r) < 0.05
        assert _direct_p(r, v, eps_d + one_run.EPS_STEP, 1e-4, 2 * r) >= 0.05
    assert one_run.ceiling(1000) == pytest.approx(np.log(0.05**1e-3 / (1 - 0.05**1e-3)))  # ≈ 5.8
    assert 5.7 < one_run.ceiling(1000) < 5.9
    assert one_run.epsilon_lower(100, 40) == 0.0 and one_run.epsilon_lower(10, 0) == 0.0
    with pytest.raises(FlatprivError):
        one_run.p_value(10, 11, 1.0)
    with pytest.raises(FlatprivError):
        one_run.p_value(10, 5, 1.0, delta=1e-5)  # delta > 0 needs m


def _randomized_response(eps: float, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ε-DP in each bit: canary i is IN w.p. ½ and the output reports its bit truthfully w.p. e^ε/(1+e^ε)."""
    members = rng.random(m) < 0.5
    truthful = rng.random(m) < np.exp(eps) / (1 + np.exp(eps))
    said_in = np.where(truthful, members, ~members)
    return said_in + rng.random(m) * 0.5, members  # ties broken by noise independent of the bits


def test_randomized_response_bound_is_valid_and_rises_toward_eps():
    eps, rng = 1.0, np.random.default_rng(0)
    means = []
    for m, reps in ((100, 60), (1000, 60), (10_000, 20), (100_000, 4)):
        bounds = [one_run.one_run_audit(*_randomized_response(eps, m, rng))["eps_lower"] for _ in range(reps)]
        assert np.mean(np.array(bounds) <= eps) >= 0.95, (m, bounds)
        means.append(np.mean(bounds))
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] > 0.85 * eps and means[0] < 0.5 * eps, means
    out = one_run.one_run_audit(*_randomized_response(eps, 1000, rng))
    assert out["r"] == out["k_plus"] + out["k_minus"] and 0 <= out["v"] <= out["r"]
    assert out["eps_lower"] <= out["ceiling"] and out["n_pairs"] == len(one_run.guess_grid(1000))


def test_no_signal_gives_zero_and_nan_scores_abstain():
    rng = np.random.default_rng(1)
    members = rng.random(2000) < 0.5
    below = [one_run.one_run_audit(rng.random(2000), members)["eps_lower"] == 0.0 for _ in range(20)]
    assert np.mean(below) >= 0.9
    s = np.where(members, 1.0, 0.0)
    s[:1000] = np.nan
    out = one_run.one_run_audit(s, members)
    assert out["n_scored"] == 1000 and out["m"] == 2000 and out["eps_lower"] > 3
