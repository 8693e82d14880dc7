"""The two privacy audits ``flatpriv attack`` reports, applied to a pool's membership scores.

- **One-run audit** (:mod:`flatpriv.privacy.one_run`, Steinke, Nasr, Jagielski 2023): valid when every audited
  example was included independently with probability ½ (``flatpriv pool --keep-mode bernoulli --keep 0.5``;
  ``--canaries N`` mislabels N of them, which are then also audited alone). Applied per model (one training run:
  model t's guesses read the other models, which are independent of t's inclusion bits) and over the pool, split
  in two: the first ⌊K/2⌋ models are audited, each scored with the last ⌈K/2⌉ models as its only references, so
  that no guess reads an audited model's keep mask; the pool is then one mechanism on ⌊K/2⌋·m independent bits.
- **Clopper–Pearson bound** (:func:`flatpriv.privacy.audit.epsilon_lower_bound`) over all (model, example) pairs:
  a heuristic, since the pairs of one model are not independent trials (one trained model scores them all) and
  the threshold is chosen on the same scores; no theorem backs the way it pools.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..privacy.one_run import one_run_audit
from .attack_scores import PoolSignals

CP_KIND = (
    "heuristic: Clopper-Pearson on FPR and FNR over all (model, example) pairs, which are not independent "
    "trials within a model, at the best threshold of the same scores"
)


def one_run_not_applicable(pool_meta: dict[str, Any]) -> str | None:
    """Why the one-run audit's assumption fails for this pool, or None when every example is a fair coin."""
    if pool_meta.get("keep_mode") != "bernoulli" or pool_meta.get("keep_fraction") != 0.5:
        return (
            "needs independent inclusion with probability 1/2: a pool made with --keep-mode bernoulli --keep 0.5 "
            f"(this one: --keep-mode {pool_meta.get('keep_mode', 'exact')} --keep {pool_meta.get('keep_fraction')})"
        )
    return None


def _brief(audit: dict[str, Any]) -> dict[str, Any]:
    return {k: audit[k] for k in ("eps_lower", "ceiling", "k_plus", "k_minus", "r", "v", "m", "n_pairs")}


def per_model(scores: np.ndarray, keep: np.ndarray, delta: float, columns: np.ndarray | None = None) -> dict[str, Any]:
    """The audit of every model alone (columns: the audited examples, default all): model 0's in full, and the
    median and max over models (each bound holds for its model; the max over models is not corrected for the
    choice and is descriptive only)."""
    cols = slice(None) if columns is None else columns
    audits = [one_run_audit(scores[t, cols], keep[t, cols], delta=delta) for t in range(scores.shape[0])]
    eps = np.array([a["eps_lower"] for a in audits])
    return {
        "model0": _brief(audits[0]),
        "median_over_models": float(np.median(eps)),
        "max_over_models": float(eps.max()),
        "models": int(eps.size),
    }


def split_halves(n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """(audited models, reference models) of the pooled audit."""
    audited = np.arange(n_models // 2)
    return audited, np.arange(n_models // 2, n_models)


def pooled(signals: PoolSignals, attack: str, delta: float, columns: np.ndarray | None = None) -> dict[str, Any]:
    """The audit over the first half of the pool, scored against the second half only."""
    audited, refs = split_halves(signals.keep.shape[0])
    scores = np.stack([signals.with_references(attack, int(t), refs) for t in audited])
    members = signals.keep[audited]
    if columns is not None:
        scores, members = scores[:, columns], members[:, columns]
    out = _brief(one_run_audit(scores.ravel(), members.ravel(), delta=delta))
    out.update(audited_models=int(audited.size), reference_models=int(refs.size))
    return out
