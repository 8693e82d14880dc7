"""Time to score a pool with every attack flatpriv runs (thresholds, per-class, seven LiRA variants, RMIA online
and offline against 1000 population points) and to compute the metrics, the Clopper–Pearson bound and the one-run
audit, on a synthetic pool of K models × N examples (default 256 × 10 000).

The logits are random with a planted membership signal, so the timing covers the real code paths.
Prints one JSON object. Usage: python benchmarks/attack.py [--models 256] [--examples 10000] [--bootstrap 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from flatpriv.analyses.attack_scores import ATTACKS, PoolSignals, RmiaSettings
from flatpriv.attacks.metrics import attack_metrics
from flatpriv.privacy.audit import epsilon_lower_bound
from flatpriv.privacy.one_run import one_run_audit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    test_labels = rng.integers(0, c, 1000)
    test_logits = rng.normal(size=(k, 1000, c)).astype(np.float32)
    test_logits[:, np.arange(1000), test_labels] += 1.0
    pool = {
        "keep": keep,
        "train_logits": logits,
        "train_labels": labels,
        "test_logits": test_logits,
        "test_labels": test_labels,
    }
    t0 = time.perf_counter()
    signals = PoolSignals(pool, RmiaSettings())
    scores = {name: signals.leave_one_out(name) for name in ATTACKS}
    t_scores = time.perf_counter() - t0
    t1 = time.perf_counter()
    aucs = {}
    for name, s in scores.items():
        aucs[name] = round(attack_metrics(s.ravel(), keep.ravel(), n_boot=a.bootstrap)["auc"], 4)
    t_metrics = time.perf_counter() - t1
    t2 = time.perf_counter()
    epsilon_lower_bound(scores["lira_online_fixed"].ravel(), keep.ravel())
    t_audit = time.perf_counter() - t2
    t3 = time.perf_counter()
    for t in range(k):
        one_run_audit(scores["lira_online_fixed"][t], keep[t])
    t_one_run = time.perf_counter() - t3
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
                "one_run_audit_seconds_every_model_one_attack": round(t_one_run, 2),
                "auc": aucs,
            }
        )
    )


if __name__ == "__main__":
    main()
