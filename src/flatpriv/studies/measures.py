"""What the studies measure on a finished pool, per unit (test point, training point, target model), so that every
claim's interval can be bootstrapped over the unit its rule names.

All functions take the arrays :func:`flatpriv.analyses.memorization.load_pool` returns.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.attack_scores import VARIANTS, PoolSignals, RmiaSettings
from ..analyses.memorization import load_pool
from ..attacks.metrics import auc, roc, tpr_at_fpr
from ..attacks.scores import logit_scaled_confidence
from ..memorization import correctness, influence, influence_entropy, memorization
from ..privacy.audit import epsilon_lower_bound

ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "rmia_online", "rmia_offline", "loss", "confidence")
MAIN_ATTACK = "lira_online_fixed"  # science.md §6.1 R2a: LiRA online, fixed variance as the paper describes it
FPR = 0.01
MEM_EDGES = np.array([-1.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])  # FZ memorization bins for attack success


@cache
def pool(run_dir: str) -> dict[str, Any]:
    return load_pool(Path(run_dir))


def test_correct(p: dict[str, Any]) -> np.ndarray:
    """[K, M] 0/1: model k classifies test point j correctly."""
    return correctness(p["test_logits"], p["test_labels"], "correct")


def train_accuracy(p: dict[str, Any]) -> float:
    """Mean over models of the accuracy on each model's own training subset (interpolation check)."""
    corr = correctness(p["train_logits"], p["train_labels"], "correct")
    return float(((corr * p["keep"]).sum(1) / p["keep"].sum(1)).mean())


def memorization_scores(p: dict[str, Any]) -> np.ndarray:
    """Feldman–Zhang mem_i on 0/1 correctness (NaN where an example is never in or never out)."""
    return memorization(p["keep"], correctness(p["train_logits"], p["train_labels"], "correct")).score


def entropy(p: dict[str, Any]) -> np.ndarray:
    """Paper 1's influence entropy of each test point, from the pool's FZ influence matrix (same-class, positive)."""
    infl = influence(p["keep"], correctness(p["test_logits"], p["test_labels"], "correct"))
    return influence_entropy(infl, p["train_labels"], p["test_labels"])


def phi(p: dict[str, Any]) -> np.ndarray:
    return logit_scaled_confidence(p["train_logits"], p["train_labels"])


def variant(attack: str) -> str:
    """What an attack name computes, as ``flatpriv attack``'s tables name it (RMIA with its default settings)."""
    s = RmiaSettings()
    return VARIANTS[attack].format(gamma=s.gamma, a=s.offline_a, temperature=s.temperature)


def attack_scores(p: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """attack -> (scores [K, N], members [K, N]) for every attack of :data:`ATTACKS`: every model the target in
    turn, the others its shadows (RMIA: its references, with the test set as the population), exactly as
    ``flatpriv attack`` scores a pool."""
    signals = PoolSignals(p, RmiaSettings())
    keep = np.asarray(p["keep"], dtype=bool)
    return {a: (signals.leave_one_out(a), keep) for a in ATTACKS}


def attack_score(p: dict[str, Any], attack: str) -> tuple[np.ndarray, np.ndarray]:
    """One attack of :func:`attack_scores` alone: (scores [K, N], members [K, N])."""
    return PoolSignals(p, RmiaSettings()).leave_one_out(attack), np.asarray(p["keep"], dtype=bool)


def per_model_attack(scores: np.ndarray, members: np.ndarray, fpr: float = FPR) -> dict[str, np.ndarray]:
    """AUC and TPR at ``fpr`` of each target model on its own members and non-members."""
    aucs, tprs = [], []
    for s, m in zip(scores, members):
        ok = np.isfinite(s)
        curve = roc(s[ok], m[ok])
        aucs.append(auc(s[ok], m[ok]))
        tprs.append(tpr_at_fpr(curve.fpr, curve.tpr, fpr))
    return {"auc": np.array(aucs), "tpr": np.array(tprs)}


def pooled_attack(scores: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    """The ROC over all (target, example) scores pooled, and the audit bound on them (a heuristic: trials within
    one target model are not independent)."""
    s, m = scores.ravel(), members.ravel().astype(bool)
    ok = np.isfinite(s)
    curve = roc(s[ok], m[ok])
    return {
        "auc": auc(s[ok], m[ok]),
        "tpr_at_1pct": tpr_at_fpr(curve.fpr, curve.tpr, FPR),
        "fpr": curve.fpr,
        "tpr": curve.tpr,
        "n_members": int(m[ok].sum()),
        "n_nonmembers": int((~m[ok]).sum()),
    }


def out_phi_variance(p: dict[str, Any]) -> np.ndarray:
    """Var_k(φ_ki) over the models that held example i OUT (paper 1 v4's variance contraction), per example."""
    f, out = phi(p), ~p["keep"]
    n = out.sum(0)
    mean = (f * out).sum(0) / np.maximum(n, 1)
    var = (((f - mean) ** 2) * out).sum(0) / np.maximum(n - 1, 1)
    return np.where(n >= 2, var, np.nan)


def tpr_by_memorization(
    scores: np.ndarray, members: np.ndarray, mem: np.ndarray, edges: np.ndarray, fpr: float = FPR
) -> tuple[np.ndarray, np.ndarray]:
    """TPR at ``fpr`` of the members in each memorization bin, at the one threshold that gives ``fpr`` over all
    non-members (pooled over targets); returns (TPR per bin, member count per bin)."""
    s = scores
    nonmember = s[~members & np.isfinite(s)]
    threshold = np.quantile(nonmember, 1 - fpr) if len(nonmember) else np.inf
    bins = np.clip(np.digitize(mem, edges[1:-1]), 0, len(edges) - 2)
    tpr, count = [], []
    for b in range(len(edges) - 1):
        sel = members & (bins[None, :] == b) & np.isfinite(s)
        count.append(int(sel.sum()))
        tpr.append(float((s[sel] > threshold).mean()) if sel.any() else np.nan)
    return np.array(tpr), np.array(count)


def audit(scores: np.ndarray, members: np.ndarray, delta: float) -> float:
    """The Clopper–Pearson ε lower bound on pooled (model, example) scores: a heuristic (see flatpriv.privacy.audit)."""
    return float(epsilon_lower_bound(scores.ravel(), members.ravel().astype(bool), delta=delta)["eps_lower"])


def pareto(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points (name, accuracy, TPR) that no other point beats on both: higher accuracy, lower TPR."""
    front = []
    for name, acc, tpr in points:
        if not any(a >= acc and t <= tpr and (a > acc or t < tpr) for n, a, t in points if n != name):
            front.append(name)
    return front
