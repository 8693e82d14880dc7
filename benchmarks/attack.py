"""Time to score a pool with every attack flatpriv runs (thresholds, per-class, four LiRA variants) and to
compute the metrics and the ε lower bound, on a synthetic pool of K models × N examples (default 256 × 10 000).

The logits are random with a planted membership signal, so the timing covers the real code paths.
Prints one JSON object. Usage: python benchmarks/attack.py [--models 256] [--examples 10000] [--bootstrap 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from flatpriv.analyses.attack import _pool_scores
from flatpriv.attacks.metrics import attack_metrics
from flatpriv.privacy.audit import epsilon_lower_bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=256)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples in the metrics (default 0)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    k, n, c = a.models, a.examples, a.classes
    keep = rng.random((k, n)) < 0.5
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(k, n, c)).astype(np.float32)
    logits[np.arange(k)[:, None], np.arange(n)[None, :], labels[None, :]] += 1.0 + keep  # members fit better
    pool = {"keep": keep, "train_logits": logits, "train_labels": labels}
    t0 = time.perf_counter()
    scores = _pool_scores(pool)
    t_scores = time.perf_counter() - t0
    t1 = time.perf_counter()
    aucs = {}
    for name, (s, m) in scores.items():
        aucs[name] = round(attack_metrics(s.ravel(), m.ravel(), n_boot=a.bootstrap)["auc"], 4)
    t_metrics = time.perf_counter() - t1
    t2 = time.perf_counter()
    epsilon_lower_bound(*[x.ravel() for x in scores["lira_online_fixed"]])
    t_audit = time.perf_counter() - t2
    print(
        json.dumps(
            {
                "models": k,
                "examples": n,
                "attacks": len(scores),
                "scoring_seconds": round(t_scores, 2),
                "metrics_seconds": round(t_metrics, 2),
                "bootstrap": a.bootstrap,
                "audit_seconds_one_attack": round(t_audit, 2),
                "auc": aucs,
            }
        )
    )


if __name__ == "__main__":
    main()
