"""Privacy accounting: golden values, agreement with dp_accounting, monotonicity, calibration, ledgers, bad input."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import dp_accounting as dpa
import pytest
from dp_accounting import NeighboringRelation, pld, rdp
from hypothesis import example, given, settings
from hypothesis import strategies as st

import flatpriv.privacy as privacy
from flatpriv.errors import FlatprivError
from flatpriv.privacy import (
    ACCOUNTANTS,
    NEIGHBOURING,
    Ledger,
    Release,
    accountant_description,
    calibrate_noise,
    epsilon,
    epsilon_from_ledger,
)

OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
FEW = settings(max_examples=40, deadline=None, derandomize=True)  # CI must not fail on a fresh random draw


def _direct(sigma: float, q: float, count: int, delta: float, accountant: str) -> float:
    """ε straight from dp_accounting, independent of flatpriv's code path."""
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), count)
    if accountant == "pld":
        acc = pld.PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3)
    else:
        acc = rdp.RdpAccountant(OPACUS_ORDERS + [128, 256, 512, 1024], NeighboringRelation.ADD_OR_REMOVE_ONE)
    acc.compose(event)
    return acc.get_epsilon(delta)


# --- golden / reference values --------------------------------------------------------------------------------


def test_opacus_rdp_golden_value():
    assert epsilon(1.5, 0.04, 2250, 1e-5, accountant="rdp") == pytest.approx(7.3291, abs=1e-3)


def test_reference_pld_and_rdp_values():
    q = 4096 / 50000
    eps_pld = epsilon(3.0, q, 2468, 1e-5)  # default accountant is PLD
    eps_rdp = epsilon(3.0, q, 2468, 1e-5, accountant="rdp")
    assert eps_pld == pytest.approx(6.53, abs=0.03)
    assert eps_rdp == pytest.approx(7.05, abs=0.05)
    assert eps_pld < eps_rdp  # RDP overstates ε


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"), [(1.1, 0.01, 500, 1e-5), (2.0, 0.1, 120, 1e-6), (0.8, 1.0, 3, 1e-3)]
)
def test_matches_dp_accounting_directly(accountant, sigma, q, steps, delta):
    expected = _direct(sigma, q, steps, delta, accountant)
    assert epsilon(sigma, q, steps, delta, accountant=accountant) == pytest.approx(expected, rel=1e-12)


def test_opacus_order_grid_is_contained():
    assert set(OPACUS_ORDERS) <= set(privacy.accounting.RDP_ORDERS)


# --- monotonicity (property-based) ---------------------------------------------------------------------------

sigmas = st.floats(0.5, 5.0)
rates = st.floats(1e-3, 1.0)
counts = st.integers(1, 150)
accountants = st.sampled_from(ACCOUNTANTS)


def _at_most(a: float, b: float) -> bool:
    """a ≤ b up to 1e-3 relative. For small σ and q near 1, dp-accounting's RDP drops the fractional orders whose
    series does not converge (it logs a warning), so ε(q) can dip by ~1e-4 relative (seen: σ = 0.5, 79 steps,
    ε(0.9375) = 234.076 > ε(0.96875) = 234.048); each value is still a valid upper bound."""
    return a <= b * (1 + 1e-3)


@FEW
@given(sigmas, rates, counts, st.integers(1, 150), accountants)
def test_monotone_in_steps(sigma, q, steps, extra, accountant):
    assert _at_most(epsilon(sigma, q, steps, 1e-5, accountant), epsilon(sigma, q, steps + extra, 1e-5, accountant))


@FEW
@given(sigmas, rates, rates, counts, accountants)
@example(0.5, 0.9375, 0.96875, 79, "rdp")  # the case where dp-accounting's RDP dips (see _at_most)
def test_monotone_in_sample_rate(sigma, q1, q2, steps, accountant):
    lo, hi = sorted((q1, q2))
    assert _at_most(epsilon(sigma, lo, steps, 1e-5, accountant), epsilon(sigma, hi, steps, 1e-5, accountant))


@FEW
@given(sigmas, sigmas, rates, counts, accountants)
def test_non_increasing_in_noise(s1, s2, q, steps, accountant):
    lo, hi = sorted((s1, s2))
    assert _at_most(epsilon(hi, q, steps, 1e-5, accountant), epsilon(lo, q, steps, 1e-5, accountant))


# --- calibration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize(("target", "q", "steps"), [(1.0, 0.02, 300), (3.0, 2048 / 50000, 500), (8.0, 0.1, 100)])
def test_calibration_never_overshoots_and_is_tight(accountant, target, q, steps):
    sigma = calibrate_noise(target, q, steps, 1e-5, accountant=accountant)
    assert epsilon(sigma, q, steps, 1e-5, accountant) <= target
    assert epsilon(0.99 * sigma, q, steps, 1e-5, accountant) > target
    # and independently of flatpriv's own epsilon():
    assert _direct(sigma, q, steps, 1e-5, accountant) <= target


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_calibration_verifies_the_root_finder(accountant, monkeypatch):
    """Even when the root finder lands on the wrong side (σ 0.5 % too small), the returned σ meets the target."""
    real = privacy.accounting.brentq
    monkeypatch.setattr(privacy.accounting, "brentq", lambda *a, **k: real(*a, **k) - 5e-3)
    sigma = calibrate_noise(2.0, 0.03, 200, 1e-5, accountant=accountant)
    assert _direct(sigma, 0.03, 200, 1e-5, accountant) <= 2.0
    assert epsilon(0.99 * sigma, 0.03, 200, 1e-5, accountant) > 2.0


def test_calibration_releases_per_step_is_more_steps():
    a = calibrate_noise(2.0, 0.05, 100, 1e-5, accountant="rdp", releases_per_step=2)
    b = calibrate_noise(2.0, 0.05, 200, 1e-5, accountant="rdp")
    assert a == pytest.approx(b, rel=1e-9)
    assert a > calibrate_noise(2.0, 0.05, 100, 1e-5, accountant="rdp")


def test_calibration_zero_steps_needs_no_noise():
    assert calibrate_noise(1.0, 0.1, 0, 1e-5) == 0.0


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_calibration_refuses_unreachable_and_nonpositive_targets(accountant):
    with pytest.raises(FlatprivError, match="target_epsilon"):
        calibrate_noise(1e-4, 1.0, 100, 1e-5, accountant=accountant)
    for bad in (0.0, -1.0):
        with pytest.raises(FlatprivError, match="target_epsilon"):
            calibrate_noise(bad, 0.1, 10, 1e-5, accountant=accountant)


# --- ledgers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_releases_per_step_equals_more_steps(accountant):
    assert epsilon(1.2, 0.05, 80, 1e-5, accountant, releases_per_step=2) == epsilon(1.2, 0.05, 160, 1e-5, accountant)
    assert epsilon(1.2, 0.05, 80, 1e-5, accountant, releases_per_step=2) > epsilon(1.2, 0.05, 80, 1e-5, accountant)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_ledger_recorded_step_by_step_equals_epsilon(accountant):
    ledger = Ledger()
    for _ in range(60):
        ledger.record(1.3, 0.03)
    ledger.record(1.3, 0.03, count=40)
    assert ledger.entries == [Release(1.3, 0.03, 100)]  # merged into one entry
    assert ledger.releases == 100
    assert epsilon_from_ledger(ledger, 1e-5, accountant) == epsilon(1.3, 0.03, 100, 1e-5, accountant)


def test_ledger_merges_only_equal_consecutive_entries():
    ledger = Ledger()
    ledger.record(1.0, 0.1, 5)
    ledger.record(2.0, 0.1, 3)
    ledger.record(2.0, 0.2)
    ledger.record(2.0, 0.2, 0)  # nothing happened
    ledger.record(1.0, 0.1, 2)
    assert [(e.noise_multiplier, e.sample_rate, e.count) for e in ledger.entries] == [
        (1.0, 0.1, 5),
        (2.0, 0.1, 3),
        (2.0, 0.2, 1),
        (1.0, 0.1, 2),
    ]
    assert ledger.releases == 11


def test_ledger_round_trips_through_json():
    ledger = Ledger()
    ledger.record(1.0, 0.1, 5)
    ledger.record(2.5, 0.02, 7)
    d = json.loads(json.dumps(ledger.to_dict()))
    assert d["neighbouring"] == NEIGHBOURING == "add/remove-one"
    again = Ledger.from_dict(d)
    assert again == ledger
    assert epsilon_from_ledger(again, 1e-5) == epsilon_from_ledger(ledger, 1e-5)
    with pytest.raises(FlatprivError, match="sample_rate"):
        Ledger.from_dict({"entries": [{"noise_multiplier": 1.0, "sample_rate": 2.0, "count": 1}]})
    with pytest.raises(FlatprivError, match="ledger entry"):
        Ledger.from_dict({"entries": [{"noise_multiplier": 1.0}]})
    with pytest.raises(FlatprivError, match="entries"):
        Ledger.from_dict({"releases": []})


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_mixed_ledger_composes(accountant):
    a, b = (1.0, 0.02, 200), (2.0, 0.1, 100)
    ledger = Ledger()
    ledger.record(*a)
    ledger.record(*b)
    event = ledger.dp_event()
    assert isinstance(event, dpa.ComposedDpEvent) and len(event.events) == 2
    mixed = epsilon_from_ledger(ledger, 1e-5, accountant)
    assert mixed > epsilon(*a, 1e-5, accountant)
    assert mixed > epsilon(*b, 1e-5, accountant)
    # and no worse than basic composition (ε adds up, with δ doubled, so compare at δ/2 per part)
    assert mixed <= epsilon(*a, 5e-6, accountant) + epsilon(*b, 5e-6, accountant)


def test_pld_ledger_equals_the_accountant_exactly_epoch_after_epoch():
    """flatpriv builds each (σ, q) release's PLD once and reuses it for every later ε: each answer must be the
    accountant's own, to the last bit, for a growing ledger and a mixed one."""
    ledger = Ledger()
    for epoch in range(1, 5):
        ledger.record(1.15, 0.0256, 39)
        acc = pld.PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3)
        acc.compose(dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.0256, dpa.GaussianDpEvent(1.15)), 39 * epoch))
        assert epsilon_from_ledger(ledger, 1e-5) == acc.get_epsilon(1e-5)
    ledger.record(2.0, 0.1, 10)
    ledger.record(1.15, 0.0256, 5)
    acc = pld.PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3)
    acc.compose(ledger.dp_event())
    assert epsilon_from_ledger(ledger, 1e-6) == acc.get_epsilon(1e-6)


def test_empty_ledger_and_zero_steps_give_zero():
    for accountant in ACCOUNTANTS:
        assert epsilon_from_ledger(Ledger(), 1e-5, accountant) == 0.0
        assert epsilon(1.0, 0.1, 0, 1e-5, accountant) == 0.0
        assert epsilon(0.0, 0.1, 0, 1e-5, accountant) == 0.0


def test_no_noise_gives_infinite_epsilon():
    for accountant in ACCOUNTANTS:
        assert epsilon(0.0, 0.1, 10, 1e-5, accountant) == math.inf
        ledger = Ledger()
        ledger.record(1.0, 0.1, 10)
        ledger.record(0.0, 0.1, 1)
        assert epsilon_from_ledger(ledger, 1e-5, accountant) == math.inf


def test_full_batch_is_allowed_and_costs_more():
    assert epsilon(2.0, 1.0, 10, 1e-5) > epsilon(2.0, 0.5, 10, 1e-5)


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"noise_multiplier": "1"}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "prv"}, "accountant"),
        ({"releases_per_step": 0}, "releases_per_step"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, name):
    args = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10, "delta": 1e-5} | kwargs
    with pytest.raises(FlatprivError, match=name) as info:
        epsilon(**args)
    assert "\n" not in str(info.value)
    if name != "noise_multiplier":
        calib = {k: v for k, v in args.items() if k != "noise_multiplier"}
        with pytest.raises(FlatprivError, match=name):
            calibrate_noise(1.0, **calib)


def test_bad_ledger_input():
    with pytest.raises(FlatprivError, match="count"):
        Ledger().record(1.0, 0.1, -1)
    with pytest.raises(FlatprivError, match="ledger"):
        epsilon_from_ledger({"entries": []}, 1e-5)
    with pytest.raises(FlatprivError, match="accountant"):
        accountant_description("moments")


def test_descriptions_name_the_neighbouring_relation():
    for accountant in ACCOUNTANTS:
        text = accountant_description(accountant)
        assert accountant.upper() in text and "add/remove-one" in text and "dp-accounting" in text


def test_accounting_never_imports_torch():
    """accounting.py, pld.py and the package's __init__ use only the standard library, numpy, scipy and
    dp_accounting."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "dp_accounting"}
    for path in (Path(privacy.__file__), Path(privacy.accounting.__file__), Path(privacy.pld.__file__)):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom):  # relative: only flatpriv.errors, or privacy's own accounting/pld
                allowed_relative = {(1, "accounting"), (1, "pld"), (2, "errors")}
                assert (node.level, node.module) in allowed_relative, f"{path.name}: ..{node.module}"
                continue
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
