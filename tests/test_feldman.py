"""flatpriv.memorization.feldman: FZ memorization and influence on hand-built and simulated pools, check_pool."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

import flatpriv.memorization as mem_pkg
from flatpriv.errors import FlatprivError
from flatpriv.memorization import check_pool, correctness, influence, memorization

# 4 models × 3 examples. Example 0: in for models 0-2, out for 3. Example 1: in for 0 and 2. Example 2: never in.
KEEP = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
CORR = np.array([[1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=float)


def test_hand_built_example() -> None:
    r = memorization(KEEP, CORR)
    # ex 0: in corr (1, 0, 1) → 2/3, out corr (0) → 0; n_out = 1 so no SE.
    # ex 1: in (1, 0) → 1/2, out (1, 0) → 1/2 → 0; SE = sqrt(0.5/2 + 0.5/2) = sqrt(0.5).
    # ex 2: never in → NaN.
    np.testing.assert_allclose(r.score[:2], [2 / 3, 0.0])
    assert np.isnan(r.score[2])
    assert np.isnan(r.stderr[0]) and np.isnan(r.stderr[2])
    np.testing.assert_allclose(r.stderr[1], np.sqrt(0.5))
    np.testing.assert_array_equal(r.n_in, [3, 2, 0])
    np.testing.assert_array_equal(r.n_out, [1, 2, 4])


def test_never_out_is_nan_without_warnings() -> None:
    keep = np.array([[1, 0], [1, 1], [1, 0]], dtype=bool)
    corr = np.ones((3, 2))
    with np.errstate(all="raise"):
        r = memorization(keep, corr)
    assert np.isnan(r.score[0]) and np.isfinite(r.score[1])


def test_stderr_matches_naive() -> None:
    rng = np.random.default_rng(1)
    keep = rng.random((30, 25)) < 0.5
    corr = rng.random((30, 25))
    r = memorization(keep, corr)
    for i in range(25):
        cin, cout = corr[keep[:, i], i], corr[~keep[:, i], i]
        assert r.score[i] == pytest.approx(cin.mean() - cout.mean())
        se = np.sqrt(cin.var(ddof=1) / cin.size + cout.var(ddof=1) / cout.size)
        assert r.stderr[i] == pytest.approx(se)


def test_probability_variant_is_softmax_of_true_label() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 5, 4)) * 3
    labels = np.array([0, 1, 2, 3, 1])
    p = correctness(logits, labels, kind="prob")
    soft = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(p, soft[:, np.arange(5), labels])
    np.testing.assert_array_equal(correctness(logits, labels), logits.argmax(axis=2) == labels)
    big = np.array([[[1000.0, 0.0], [0.0, 1000.0]]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(correctness(big, np.array([0, 0]), kind="prob"), [[1.0, 0.0]], atol=1e-300)


def test_independent_correctness_gives_zero_and_corr_equal_keep_gives_one() -> None:
    rng = np.random.default_rng(3)
    keep = rng.random((400, 300)) < 0.5
    corr = (rng.random((400, 300)) < 0.7).astype(float)
    r = memorization(keep, corr)
    assert abs(np.mean(r.score)) < 0.01
    assert np.all(np.abs(r.score) < 6 * r.stderr)
    np.testing.assert_array_equal(memorization(keep, keep.astype(float)).score, 1.0)


def test_planted_rare_examples_are_memorized() -> None:
    rng = np.random.default_rng(4)
    n_models, n_rare, n_typical = 64, 40, 360
    keep = rng.random((n_models, n_rare + n_typical)) < 0.5
    noise = rng.random((n_models, n_rare)) < 0.05
    corr = np.concatenate(
        [(keep[:, :n_rare] ^ noise).astype(float), (rng.random((n_models, n_typical)) < 0.95).astype(float)], axis=1
    )
    score = memorization(keep, corr).score
    assert score[:n_rare].mean() > 0.8 and abs(score[n_rare:].mean()) < 0.05
    assert mannwhitneyu(score[:n_rare], score[n_rare:], alternative="greater").pvalue < 1e-6


def _naive_influence(keep: np.ndarray, corr_test: np.ndarray) -> np.ndarray:
    n_models, n_train = keep.shape
    out = np.full((corr_test.shape[1], n_train), np.nan)
    for j in range(corr_test.shape[1]):
        for i in range(n_train):
            s_in = s_out = c_in = c_out = 0.0
            for k in range(n_models):
                if keep[k, i]:
                    s_in, c_in = s_in + corr_test[k, j], c_in + 1
                else:
                    s_out, c_out = s_out + corr_test[k, j], c_out + 1
            if c_in and c_out:
                out[j, i] = s_in / c_in - s_out / c_out
    return out


def test_influence_matches_triple_loop_and_chunking() -> None:
    rng = np.random.default_rng(5)
    keep = rng.random((12, 9)) < 0.5
    keep[:, 2], keep[:, 6] = True, False  # never out, never in
    corr_test = rng.random((12, 7))
    naive = _naive_influence(keep, corr_test)
    full = influence(keep, corr_test)
    assert full.shape == (7, 9)
    np.testing.assert_allclose(full, naive, atol=1e-6, equal_nan=True)
    assert np.all(np.isnan(full[:, [2, 6]])) and not np.any(np.isnan(np.delete(full, [2, 6], axis=1)))
    for chunk in (1, 2, 4):
        np.testing.assert_array_equal(influence(keep, corr_test, chunk=chunk), full)
    np.testing.assert_array_equal(influence(keep, corr_test, max_elements=20), full)


def test_influence_of_a_training_point_on_its_duplicate() -> None:
    # A test point answered correctly iff training point 0 was in: infl[j, 0] = 1, others ≈ 0.
    rng = np.random.default_rng(6)
    keep = rng.random((200, 5)) < 0.5
    infl = influence(keep, keep[:, :1].astype(float))
    assert infl[0, 0] == 1.0 and np.all(np.abs(infl[0, 1:]) < 0.3)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"keep": np.ones((5, 3), dtype=int)}, "boolean"),
        ({"logits": np.zeros((5, 4, 2))}, "disagrees"),
        ({"labels": np.zeros(4, dtype=int)}, "disagrees"),
        ({"logits": np.full((5, 3, 2), np.nan)}, "corrupted"),
        ({"logits": np.array([[[np.inf, 0]] * 3] * 5)}, "corrupted"),
        ({"labels": np.array([0, 1, 2])}, "labels"),
        ({"keep": np.ones((2, 3), dtype=bool), "logits": np.zeros((2, 3, 2))}, "too few models"),
        ({"test_logits": np.zeros((4, 2, 2)), "test_labels": np.zeros(2, dtype=int)}, "disagrees"),
    ],
)
def test_check_pool_rejects_bad_input(change: dict, needle: str) -> None:
    args = {"keep": np.ones((5, 3), dtype=bool), "logits": np.zeros((5, 3, 2)), "labels": np.array([0, 1, 0])}
    check_pool(**args)  # the unchanged pool is fine
    args.update(change)
    with pytest.raises(FlatprivError, match=needle) as err:
        check_pool(**args)
    assert "\n" not in str(err.value)


def test_estimators_reject_bad_input_with_one_line() -> None:
    with pytest.raises(FlatprivError, match="boolean"):
        memorization(KEEP.astype(int), CORR)
    with pytest.raises(FlatprivError, match="does not match"):
        memorization(KEEP, CORR[:, :2])
    with pytest.raises(FlatprivError, match="corrupted"):
        influence(KEEP, np.full((4, 2), np.nan))


def test_memorization_modules_import_only_numpy_scipy_and_errors() -> None:
    allowed = {"__future__", "dataclasses", "typing", "numpy", "scipy", "flatpriv"}
    for name in ("__init__.py", "feldman.py", "entropy.py"):  # curvature.py (torch) is a separate module
        path = Path(mem_pkg.__file__).parent / name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 2:  # ..errors: the one module outside the package
                    assert node.module == "errors", path
                    continue
                if node.level:  # relative: only the two numpy modules
                    assert node.module in (None, "feldman", "entropy"), path
                    assert all(a.name in ("feldman", "entropy") for a in node.names) or node.module, path
                    continue
                names = [node.module or ""]
                if names[0].startswith("flatpriv"):
                    assert names[0] == "flatpriv.errors", (path, names)
            else:
                continue
            assert all(n.split(".")[0] in allowed for n in names), (path, names)


def test_package_attribute_influence_is_the_function() -> None:
    assert callable(mem_pkg.influence) and mem_pkg.influence.__module__ == "flatpriv.memorization.feldman"
