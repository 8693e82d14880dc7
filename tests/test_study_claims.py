"""The verdict function and the claims pipeline of the studies, on synthetic intervals and measurements."""

from __future__ import annotations

import numpy as np
import pytest

from flatpriv.studies.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Measurement,
    Result,
    combine,
    mean_ci,
    verdict,
)


@pytest.mark.parametrize(
    "relation, low, high, threshold, expected",
    [
        (">", 0.01, 0.2, 0.0, REPRODUCED),
        (">", -0.2, -0.01, 0.0, NOT_REPRODUCED),
        (">", -0.1, 0.1, 0.0, INCONCLUSIVE),
        (">", 0.0, 0.1, 0.0, INCONCLUSIVE),  # touching 0 is not "the whole CI above 0"
        (">", -0.1, 0.0, 0.0, NOT_REPRODUCED),  # wholly at or below 0
        ("<", -0.2, -0.01, 0.0, REPRODUCED),
        ("<", 0.01, 0.2, 0.0, NOT_REPRODUCED),
        ("<", -0.1, 0.1, 0.0, INCONCLUSIVE),
        (">=", 0.0, 0.1, 0.0, REPRODUCED),
        (">=", -0.1, -0.01, 0.0, NOT_REPRODUCED),
        ("<=", 0.3, 0.3, 1.0, REPRODUCED),
        ("<=", 1.5, 1.5, 1.0, NOT_REPRODUCED),
        (">", 1.2, 1.5, 1.0, REPRODUCED),  # a threshold other than 0
        ("within", 0.46, 0.54, (0.45, 0.55), REPRODUCED),
        ("within", 0.45, 0.55, (0.45, 0.55), REPRODUCED),  # the edges are inside
        ("within", 0.44, 0.52, (0.45, 0.55), INCONCLUSIVE),
        ("within", 0.56, 0.7, (0.45, 0.55), NOT_REPRODUCED),
        ("within", 0.3, 0.44, (0.45, 0.55), NOT_REPRODUCED),
        (">", float("nan"), 0.2, 0.0, INCONCLUSIVE),
    ],
)
def test_verdict_in_each_direction_and_at_the_edges(relation, low, high, threshold, expected):
    assert verdict(relation, low, high, threshold) == expected


def test_verdict_refuses_a_reversed_interval_and_an_unknown_relation():
    with pytest.raises(ValueError):
        verdict(">", 0.3, 0.1)
    with pytest.raises(ValueError):
        verdict("≈", 0.1, 0.3)


def test_combine_needs_every_part():
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE]) == NOT_REPRODUCED
    assert combine([]) == INCONCLUSIVE
    claim = Claim("X", "1", "x", "x > 0")
    parts = [Measurement(0.1, 0.05, 0.2, 10, "u"), Measurement(-0.1, -0.2, -0.05, 10, "u")]
    assert Result(claim, parts).verdict == NOT_REPRODUCED


def test_bootstrap_interval_covers_the_mean_at_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for r in range(200):
        v = rng.normal(0.3, 1.0, 200)
        _, lo, hi = mean_ci(v, 300, seed=r)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def _fake_measures(sam_better: bool, k: int = 16, m: int = 400, n: int = 800) -> dict[str, dict[str, np.ndarray]]:
    """Per-unit measurements where every sam-privacy claim holds by construction (or, reversed, fails)."""
    rng = np.random.default_rng(1)
    sign = 1.0 if sam_better else -1.0
    entropy = rng.random(m)
    low = entropy < np.quantile(entropy, 0.2)  # bucket 1: the lowest-entropy fifth

    def pool(acc_shift: np.ndarray, tpr: float, auc: float, mid: float, var: float, eps_lower: float = 0.0) -> dict:
        out = {
            "test_acc_pt": np.clip(0.6 + acc_shift + rng.normal(0, 0.01, m), 0, 1),
            "model_test_acc": 0.6 + acc_shift.mean() + rng.normal(0, 0.005, k),
            "train_acc": np.array(1.0),
            "mem": np.where(rng.random(n) < mid, 0.6, 0.05),
            "entropy": entropy,
            "out_phi_var": var + rng.normal(0, 0.01, n),
            "roc_fpr": np.linspace(0, 1, 50),
            "roc_tpr": np.linspace(0, 1, 50) ** 0.5,
            "tpr_by_mem": np.full(6, tpr),
            "tpr_by_mem_n": np.full(6, 10),
        }
        for a in (
            "lira_online",
            "lira_online_fixed",
            "lira_offline",
            "rmia_online",
            "rmia_offline",
            "loss",
            "confidence",
        ):
            out[f"{a}.tpr"] = tpr + rng.normal(0, 0.002, k)
            out[f"{a}.auc"] = auc + rng.normal(0, 0.002, k)
            out[f"{a}.pooled_auc"], out[f"{a}.pooled_tpr"] = np.array(auc), np.array(tpr)
            out[f"{a}.eps_lower"] = np.array(eps_lower)
        return out

    zero = np.zeros(m)
    return {
        "mnist1d-sgd": pool(zero, 0.10, 0.80, 0.30, 1.0),
        "mnist1d-sam-0.05": pool(
            sign * 0.08 * low, 0.10 + sign * 0.03, 0.80 + sign * 0.02, 0.30 + sign * 0.1, 1.0 - sign * 0.2
        ),
        "mnist1d-vasso": pool(zero, 0.10, 0.80, 0.30, 1.0),
        "mnist1d-sharpreg": pool(zero - 0.01, 0.05, 0.75, 0.30, 1.0),
        "mnist1d-sgd-e2": pool(zero - 0.05, 0.06, 0.70, 0.20, 1.0),
        "dp-dpsgd-eps1": pool(zero - 0.3, 0.011, 0.50, 0.0, 1.0, eps_lower=0.2),
        "dp-dpsat-eps1": pool(zero - 0.3, 0.011, 0.50, 0.0, 1.0, eps_lower=0.1),
    }


@pytest.mark.parametrize("sam_better", [True, False])
def test_claims_pipeline_on_planted_measurements(tmp_path, sam_better):
    from flatpriv.studies.runner import Context
    from flatpriv.studies.sam_privacy import DEFAULTS
    from flatpriv.studies.sam_privacy_analysis import _bucket_diff
    from flatpriv.studies.sam_privacy_report import build

    settings = dict(
        DEFAULTS, datasets=["mnist1d"], rhos=[0.05], dp_epsilons=[1.0], early_stop=[0.5], epochs=4, resamples=300
    )
    done = {name: {"summary": {"epsilon": 1.0}} for name in ("dp-dpsgd-eps1", "dp-dpsat-eps1")}
    results, sections = build(Context(tmp_path, settings, done=done), _fake_measures(sam_better), _bucket_diff)
    verdicts = {r.claim.id: r.verdict for r in results}
    expected = REPRODUCED if sam_better else NOT_REPRODUCED
    for claim in ("R1a", "R1b", "R1c", "R2a", "R2b", "R2c"):
        assert verdicts[claim] == expected, (claim, [p.to_dict() for p in results[0].parts])
    assert verdicts["R2d"] == REPRODUCED and verdicts["R2e"] == REPRODUCED
    assert (tmp_path / "plots" / "accuracy_vs_tpr.png").stat().st_size > 10_000
    assert any("Pareto-optimal" in s.title or any("Pareto" in str(b) for b in s.blocks) for s in sections)
