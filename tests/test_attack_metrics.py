"""Membership statistics from logits (attacks/scores.py) and attack metrics (attacks/metrics.py)."""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import flatpriv.attacks as attacks
from flatpriv.attacks import lira, metrics, scores
from flatpriv.errors import FlatprivError
from flatpriv.privacy import audit


def _naive_curve(s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every threshold "member if s >= t", t over the distinct scores plus +inf."""
    ts = np.r_[np.inf, np.sort(np.unique(s))[::-1]]
    fpr = np.array([np.mean(s[~m] >= t) for t in ts])
    tpr = np.array([np.mean(s[m] >= t) for t in ts])
    return fpr, tpr


# ----------------------------------------------------------------------------------------------- scores.py


def test_modified_entropy_matches_naive_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(4, 50, 7))
    y = rng.integers(0, 7, 50)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    expect = np.empty((4, 50))
    for k in range(4):
        for i in range(50):
            py = p[k, i, y[i]]
            others = [p[k, i, j] * np.log(1 - p[k, i, j]) for j in range(7) if j != y[i]]
            expect[k, i] = -(1 - py) * np.log(py) - sum(others)
    np.testing.assert_allclose(scores.modified_entropy(z, y), expect, rtol=1e-10)
    np.testing.assert_allclose(scores.threshold_scores("mentr", z, y), -expect, rtol=1e-10)


def test_phi_loss_confidence_match_direct_formulas_and_stay_finite():
    rng = np.random.default_rng(1)
    z = rng.normal(scale=4.0, size=(300, 10))
    y = rng.integers(0, 10, 300)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    py = p[np.arange(300), y]
    direct = np.log(py + 1e-45) - np.log(p.sum(-1) - py + 1e-45)
    np.testing.assert_allclose(scores.logit_scaled_confidence(z, y), direct, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scores.confidence(z, y), py, rtol=1e-12)
    np.testing.assert_allclose(scores.loss(z, y), -np.log(py), rtol=1e-10)
    np.testing.assert_allclose(scores.softmax(z), p, rtol=1e-12)
    huge = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0], [1000.0, 1000.0, 1000.0]])
    lab = np.array([0, 0, 1])
    phi = scores.logit_scaled_confidence(huge, lab)
    np.testing.assert_allclose(phi, [1000.0, -2000.0 - np.log1p(np.exp(-1.0)), -np.log(2.0)], rtol=1e-12)
    for kind in scores.THRESHOLD_KINDS:
        assert np.all(np.isfinite(scores.threshold_scores(kind, huge, lab))), kind


def test_threshold_scores_orientation_and_errors():
    z = np.array([[5.0, 0.0], [0.0, 0.0], [-5.0, 0.0]])  # the true class 0 gets less and less likely
    y = np.zeros(3, dtype=int)
    for kind in scores.THRESHOLD_KINDS:
        s = scores.threshold_scores(kind, z, y)
        assert np.all(np.diff(s) < 0), kind  # larger score = more member-like = more confident
    with pytest.raises(FlatprivError):
        scores.threshold_scores("entropy", z, y)
    with pytest.raises(FlatprivError):
        scores.loss(z, np.array([0, 2, 0]))
    with pytest.raises(FlatprivError):
        scores.loss(np.array([[np.nan, 0.0]]), np.array([0]))


def test_per_class_standardize_is_per_class_threshold():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 3000)
    shift, scale = np.array([0.0, 5.0, -2.0]), np.array([1.0, 3.0, 0.5])
    ref = shift[labels] + scale[labels] * rng.normal(size=3000)
    z = scores.per_class_standardize(ref, labels, ref, labels)
    for c in range(3):
        assert abs(z[labels == c].mean()) < 1e-9 and abs(z[labels == c].std() - 1) < 1e-9
    # As a leave-one-out attack: shadows' OUT scores calibrate the target's.
    keep = rng.random((6, 3000)) < 0.5
    stat = shift[labels] + scale[labels] * rng.normal(size=(6, 3000)) + keep
    fn = functools.partial(scores.per_class_calibrate, labels=labels)
    cal, members = lira.leave_one_out(keep, stat, fn)
    assert cal.shape == (6, 3000) and np.array_equal(members, keep)
    assert metrics.auc(cal, members) > metrics.auc(stat, members) + 0.05  # calibration removes class offsets


# ---------------------------------------------------------------------------------------------- metrics.py


def test_auc_tpr_balanced_accuracy_match_sklearn_and_naive_loop():
    rng = np.random.default_rng(3)
    m = rng.random(400) < 0.45
    s = np.round(rng.normal(size=400) + 0.7 * m, 1)  # ties on purpose
    assert metrics.auc(s, m) == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    curve = metrics.roc(s, m)
    fpr, tpr = _naive_curve(s, m)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    for target in (0.001, 0.01, 0.05, 0.1, 0.5):
        expect = max([t for f, t in zip(fpr, tpr) if f < target], default=0.0)
        assert metrics.tpr_at_fpr(curve.fpr, curve.tpr, target) == pytest.approx(expect)
    assert metrics.balanced_accuracy(s, m) == pytest.approx(np.max(1 - (fpr + 1 - tpr) / 2))
    # The bootstrap's cumulative-sum curve, with every weight 1, is exactly sklearn's.
    fast = metrics._SortedScores(s, m).curve(np.ones(m.sum(), int), np.ones((~m).sum(), int))
    np.testing.assert_array_equal(fast[0], curve.fpr)
    np.testing.assert_allclose(fast[1], curve.tpr, rtol=0, atol=1e-15)


def test_perfect_separation_and_identical_distributions():
    rng = np.random.default_rng(4)
    m = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    s = np.where(m, 1.0 + rng.random(6000), rng.random(6000))
    out = metrics.attack_metrics(s, m, n_boot=20)
    assert out["auc"] == 1.0 and out["tpr_at_0.1%fpr"] == 1.0 and out["balanced_accuracy"] == 1.0
    m = rng.random(20000) < 0.5
    s = rng.normal(size=20000)
    out = metrics.attack_metrics(s, m, n_boot=0)
    assert abs(out["auc"] - 0.5) < 0.02
    assert abs(out["tpr_at_1%fpr"] - 0.01) < 0.005
    assert out["auc_ci"] is None


def test_tpr_at_fpr_monotone():
    rng = np.random.default_rng(5)
    m = rng.random(5000) < 0.5
    curve = metrics.roc(rng.normal(size=5000) + m, m)
    values = [metrics.tpr_at_fpr(curve.fpr, curve.tpr, a) for a in np.geomspace(1e-4, 1.0, 40)]
    assert np.all(np.diff(values) >= 0)
    assert metrics.tpr_at_fpr(curve.fpr, curve.tpr, 0.0) == 0.0  # no ROC point has FPR < 0
    assert metrics.tpr_at_fpr(curve.fpr, curve.tpr, 1e-9) == curve.tpr[curve.fpr == 0].max()


def test_attack_metrics_bootstrap_counts_and_nan():
    rng = np.random.default_rng(6)
    m = rng.random(4000) < 0.3
    s = rng.normal(size=4000) + 1.0 * m
    s[:37] = np.nan
    s[37] = np.inf
    out = metrics.attack_metrics(s, m, n_boot=100, seed=1)
    assert out["n_dropped_nan"] == 37
    assert out["n_members"] == int(m[37:].sum()) and out["n_nonmembers"] == int((~m[37:]).sum())
    assert out["min_fpr_resolvable"] == pytest.approx(1 / out["n_nonmembers"])
    assert out["auc"] == pytest.approx(roc_auc_score(m[37:], np.nan_to_num(s[37:])), abs=1e-12)
    for name in ("auc", "balanced_accuracy", "tpr_at_0.1%fpr", "tpr_at_1%fpr"):
        low, high = out[f"{name}_ci"]
        assert low <= out[name] <= high and low < high, name
    assert out == metrics.attack_metrics(s, m, n_boot=100, seed=1)  # seeded
    assert metrics.roc(s, m).n_dropped_nan == 37
    with pytest.raises(FlatprivError):
        metrics.attack_metrics(s, np.ones(4000, bool))
    with pytest.raises(FlatprivError):
        metrics.auc(s, m[:10])


def test_plot_roc_writes_png(tmp_path: Path):
    rng = np.random.default_rng(7)
    m = rng.random(3000) < 0.5
    c1 = metrics.roc(rng.normal(size=3000) + m, m)
    c2 = metrics.roc(rng.normal(size=3000), m)
    path = metrics.plot_roc({"shifted": c1, "chance": (c2.fpr, c2.tpr)}, tmp_path / "sub" / "roc.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_pure_array_modules_never_import_torch_or_training_code():
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "sklearn", "matplotlib"}
    for module in (attacks, scores, lira, metrics, audit):
        path = Path(module.__file__)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom):
                target = (node.level, node.module)
                allowed_relative = {(1, "lira"), (1, "metrics"), (1, "scores"), (2, "errors"), (2, "attacks.metrics")}
                assert target in allowed_relative, f"{path}: {target}"
                continue
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
