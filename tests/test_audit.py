"""Empirical ε lower bound (privacy/audit.py) on mechanisms with a known ε."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from flatpriv.errors import FlatprivError
from flatpriv.privacy import audit


def _randomized_response(eps: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ε-DP randomized response: a member outputs 1 w.p. e^ε/(1+e^ε), a non-member w.p. 1/(1+e^ε)."""
    rng = np.random.default_rng(seed)
    members = rng.random(n) < 0.5
    p_one = np.where(members, np.exp(eps), 1.0) / (1.0 + np.exp(eps))
    return (rng.random(n) < p_one).astype(np.float64), members


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_randomized_response_bound_is_valid_and_tight(eps: float):
    for seed in range(4):
        out = audit.epsilon_lower_bound(*_randomized_response(eps, 200_000, seed))
        assert 0.7 * eps < out["eps_lower"] <= eps, (seed, out)
        assert out["threshold"] == 1.0 and out["n_members"] + out["n_nonmembers"] == 200_000
        assert out["fpr"] <= out["fpr_upper"] and out["fnr"] <= out["fnr_upper"]


def test_bound_holds_with_few_trials():
    """With 500 trials the bound must stay below ε in (far) more than 95 % of the repetitions."""
    below = [audit.epsilon_lower_bound(*_randomized_response(1.0, 500, seed))["eps_lower"] <= 1.0 for seed in range(60)]
    assert np.mean(below) >= 0.95


def test_identical_distributions_give_about_zero():
    rng = np.random.default_rng(0)
    members = rng.random(20_000) < 0.5
    out = audit.epsilon_lower_bound(rng.normal(size=20_000), members)
    assert 0 <= out["eps_lower"] < 0.1
    out = audit.epsilon_lower_bound(*_randomized_response(0.0, 200_000, 1))
    assert 0 <= out["eps_lower"] < 0.1


def test_bound_is_never_negative_and_uses_both_inequalities():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        members = rng.random(n) < 0.5
        members[:2] = [True, False]
        out = audit.epsilon_lower_bound(rng.normal(size=n), members)
        assert np.isfinite(out["eps_lower"]) and out["eps_lower"] >= 0
    scores, members = _randomized_response(1.0, 200_000, 2)
    flipped = audit.epsilon_lower_bound(-scores, members)  # scores must say "larger = member"
    assert flipped["eps_lower"] == 0.0 and flipped["threshold"] is None
    # Members always output 1, half the non-members do: FNR = 0, so the second inequality (FNR + e^ε FPR ≥ 1 − δ)
    # is the informative one: ε ≥ ln((1 − FPR_u)/FNR_u) ≈ ln(0.5 n_in / 3.7), not ln(1/FPR_u) ≈ ln 2.
    members = np.arange(2000) % 2 == 0
    scores = np.where(members, 1.0, np.arange(2000) % 4 == 1).astype(float)
    out = audit.epsilon_lower_bound(scores, members)
    assert out["form"] == "fnr" and out["fnr"] == 0.0 and out["eps_lower"] > 3.0


def test_delta_threshold_nan_and_errors():
    scores, members = _randomized_response(1.0, 50_000, 3)
    base = audit.epsilon_lower_bound(scores, members)
    assert audit.epsilon_lower_bound(scores, members, delta=0.05)["eps_lower"] < base["eps_lower"]
    assert audit.epsilon_lower_bound(scores, members, confidence=0.5)["eps_lower"] > base["eps_lower"]
    fixed = audit.epsilon_lower_bound(scores, members, threshold=0.5)
    assert fixed["eps_lower"] == base["eps_lower"] and fixed["n_thresholds"] == 1
    with_nan = np.r_[scores, np.nan, np.nan]
    out = audit.epsilon_lower_bound(with_nan, np.r_[members, True, False])
    assert out["n_dropped_nan"] == 2 and out["eps_lower"] == base["eps_lower"]
    with pytest.raises(FlatprivError):
        audit.epsilon_lower_bound(scores, np.ones_like(members))
    with pytest.raises(FlatprivError):
        audit.epsilon_lower_bound(scores, members, confidence=1.0)


def test_clopper_pearson_and_its_grid():
    assert audit.clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert audit.clopper_pearson_upper(100, 100, 0.95) == 1.0
    k = np.array([0, 3, 50, 99])
    np.testing.assert_allclose(audit.clopper_pearson_upper(k, 100, 0.9), beta.ppf(0.9, k + 1, 100 - k))
    np.testing.assert_array_equal(audit._upper_on_grid(k, 100, 0.9), audit.clopper_pearson_upper(k, 100, 0.9))
    n = 1_000_000
    k = np.array([0, 10, 1999, 2500, 123_457, 500_000, 876_543, n - 2500, n - 10, n])
    exact = audit.clopper_pearson_upper(k, n, 0.975)
    grid = audit._upper_on_grid(k, n, 0.975)
    assert np.all(grid >= exact)  # rounding the count up keeps the bound valid
    np.testing.assert_allclose(grid, exact, rtol=2e-3)
    np.testing.assert_allclose(1 - grid, 1 - exact, rtol=3e-3)  # also tight where the rate is near 1
