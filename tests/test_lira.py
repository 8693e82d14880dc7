"""LiRA (attacks/lira.py): near-optimal on a Gaussian pool, exact leave-one-out statistics, NaN for too few shadows."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.stats import norm

from flatpriv.attacks import lira, metrics
from flatpriv.errors import FlatprivError


def _gaussian_pool(k: int, n: int, delta: float, s: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """keep ~ Bernoulli(1/2); φ = μ_i + Δ·keep + s·noise with per-example μ_i ~ N(0, 2²)."""
    rng = np.random.default_rng(seed)
    keep = rng.random((k, n)) < 0.5
    phi = rng.normal(0.0, 2.0, n) + delta * keep + s * rng.normal(size=(k, n))
    return keep, phi


def test_online_fixed_variance_matches_the_analytic_roc():
    """Members N(μ_i + Δ, s²) against non-members N(μ_i, s²): the Neyman–Pearson ROC is
    TPR = 1 − Φ(Φ⁻¹(1 − FPR) − Δ/s), AUC = Φ(Δ/(s√2)). LiRA estimates μ_in, μ_out by medians of ~63 shadows,
    which costs a little power, so it must come within sampling error plus 0.015 of the optimum, never above it."""
    delta, s = 2.0, 1.0
    keep, phi = _gaussian_pool(128, 2000, delta, s, seed=0)
    scores, members = lira.leave_one_out(keep, phi, lira.LiRA(online=True, fixed_variance=True))
    assert not np.isnan(scores).any()
    curve = metrics.roc(scores, members)
    assert metrics.auc(scores, members) == pytest.approx(norm.cdf(delta / (s * np.sqrt(2))), abs=0.01)
    n_in, n_out = curve.n_members, curve.n_nonmembers
    for fpr in (0.01, 0.1):
        optimum = 1 - norm.cdf(norm.ppf(1 - fpr) - delta / s)
        slope = norm.pdf(norm.ppf(1 - fpr) - delta / s) / norm.pdf(norm.ppf(1 - fpr))  # dTPR/dFPR
        sd = np.sqrt(optimum * (1 - optimum) / n_in + slope**2 * fpr * (1 - fpr) / n_out)
        got = metrics.tpr_at_fpr(curve.fpr, curve.tpr, fpr)
        assert optimum - 0.015 - 4 * sd < got < optimum + 4 * sd, (fpr, got, optimum, sd)


def test_other_variants_beat_chance():
    keep, phi = _gaussian_pool(32, 1000, 1.0, 1.0, seed=1)
    for online in (True, False):
        for fixed in (True, False):
            scores, members = lira.leave_one_out(keep, phi, lira.LiRA(online, fixed))
            assert metrics.auc(scores, members) > 0.7, (online, fixed)
    # The sign convention: members get larger scores, so a pool with no signal is at chance.
    keep, phi = _gaussian_pool(32, 1000, 0.0, 1.0, seed=2)
    scores, members = lira.leave_one_out(keep, phi, lira.LiRA(False, True))
    assert abs(metrics.auc(scores, members) - 0.5) < 0.02


@pytest.mark.parametrize("fixed_variance", [False, True])
def test_leave_one_out_equals_naive_recomputation(fixed_variance: bool):
    rng = np.random.default_rng(3)
    keep = rng.random((9, 40)) < 0.5
    keep[:, 0] = [True] + [False] * 8  # one IN model: its shadows have no IN value
    keep[:, 1] = [True] * 2 + [False] * 7
    phi = rng.normal(size=(9, 40))
    phi[:, :12] = np.round(phi[:, :12])  # ties
    fast = lira.leave_one_out_params(keep, phi, fixed_variance)
    for t in range(9):
        others = np.arange(9) != t
        slow = lira.lira_params(phi[others], keep[others], fixed_variance)
        for name in ("mu_in", "mu_out", "n_in", "n_out"):
            np.testing.assert_array_equal(getattr(fast, name)[t], getattr(slow, name), err_msg=name)
        for name in ("sigma_in", "sigma_out"):
            np.testing.assert_allclose(getattr(fast, name)[t], getattr(slow, name), rtol=1e-9, atol=1e-7)
        # the medians are numpy's medians of the shadows' values
        ins = [np.median(phi[others, i][keep[others, i]]) if keep[others, i].any() else np.nan for i in range(40)]
        np.testing.assert_array_equal(fast.mu_in[t], ins)
    attack = lira.LiRA(online=True, fixed_variance=fixed_variance)
    vectorised, members = lira.leave_one_out(keep, phi, attack)
    looped, _ = lira.leave_one_out(keep, phi, lambda a, b, c: attack(a, b, c))  # the generic per-target loop
    by_partial, _ = lira.leave_one_out(keep, phi, functools.partial(lira.lira_scores, fixed_variance=fixed_variance))
    np.testing.assert_array_equal(members, keep)
    np.testing.assert_allclose(vectorised, looped, rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(vectorised, by_partial)


def test_too_few_shadows_give_nan_not_a_crash():
    rng = np.random.default_rng(4)
    keep = np.arange(8)[:, None] % 2 == np.arange(30) % 2  # 4 IN, 4 OUT: 3 shadows on the target's side
    keep[:, 0] = [True] + [False] * 7  # target 0: no IN shadow; others: one IN shadow
    keep[:, 1] = True  # nobody is OUT
    phi = rng.normal(size=(8, 30))
    online, _ = lira.leave_one_out(keep, phi, lira.LiRA(online=True))
    offline, _ = lira.leave_one_out(keep, phi, lira.LiRA(online=False))
    assert np.isnan(online[:, 0]).all() and np.isnan(online[:, 1]).all() and np.isnan(offline[:, 1]).all()
    assert np.isfinite(offline[:, 0]).all()
    # One IN shadow is enough with min_shadows=1 and the global variance, not for a per-example std.
    loose, _ = lira.leave_one_out(keep, phi, lira.LiRA(online=True, fixed_variance=True, min_shadows=1))
    assert np.isfinite(loose[1:, 0]).all() and np.isnan(loose[0, 0])
    loose, _ = lira.leave_one_out(keep, phi, lira.LiRA(online=True, fixed_variance=False, min_shadows=1))
    assert np.isnan(loose[1:, 0]).all()
    one = lira.lira_scores(phi[0], phi[1:2], keep[1:2], online=False)  # a single shadow
    assert np.isnan(one).all()
    assert np.isfinite(online[:, 2:]).all()
    out = metrics.attack_metrics(online, keep, n_boot=5)
    assert out["n_dropped_nan"] == int(np.isnan(online).sum()) == 16


def test_bad_inputs_raise():
    keep = np.ones((3, 5), bool)
    with pytest.raises(FlatprivError):
        lira.leave_one_out(keep, np.zeros((3, 4)), lira.LiRA())
    with pytest.raises(FlatprivError):
        lira.leave_one_out(keep, np.full((3, 5), np.nan), lira.LiRA())
    with pytest.raises(FlatprivError):
        lira.leave_one_out(keep[:1], np.zeros((1, 5)), lira.LiRA())
    with pytest.raises(FlatprivError):
        lira.lira_scores(np.zeros(4), np.zeros((3, 5)), keep)
    with pytest.raises(FlatprivError):
        lira.lira_scores(np.zeros(5), np.zeros((3, 5)), keep, min_shadows=0)
