"""``flatpriv attack``: membership inference on one or more finished pools, into a new run directory.

Each pool model in turn is the target and the others are its shadows (LiRA's evaluation); scores are pooled over
targets. Attacks: global and per-class thresholds (standardised against the shadows' OUT scores) on the loss, the
true-class confidence and the modified entropy (Song & Mittal 2021); LiRA online / offline with per-example or
fixed variance on φ (Carlini et al. 2022). For each pool and attack: AUC, balanced accuracy, TPR at 0.1 % and
1 % FPR with bootstrap CIs and the counts they rest on, and the empirical ε lower bound (Clopper–Pearson) next
to the accountant's ε when the pool is private.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import results
from ..attacks.lira import LiRA, leave_one_out
from ..attacks.metrics import attack_metrics, plot_roc, roc
from ..attacks.scores import logit_scaled_confidence, per_class_leave_one_out, threshold_scores
from ..errors import FlatprivError
from ..privacy.audit import epsilon_lower_bound
from .memorization import load_pool

# The smallest pool the attacks accept: every model is a target once, and its shadows must hold each example both
# IN and OUT for LiRA's per-example fits (checked by load_pool's estimator checks at 4, and needed here at 5).
MIN_MODELS = 5

ATTACKS = (
    "loss",
    "loss_per_class",
    "confidence",
    "confidence_per_class",
    "mentr",
    "mentr_per_class",
    "lira_online",
    "lira_online_fixed",
    "lira_offline",
    "lira_offline_fixed",
)


def _loo_threshold(keep: np.ndarray, stat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return stat, keep  # a global threshold needs no shadows: the target's own statistic is its score


def _pool_scores(pool: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    keep, logits, labels = pool["keep"], pool["train_logits"], pool["train_labels"]
    out = {}
    for kind in ("loss", "confidence", "mentr"):  # −ℓ, p_y, −Mentr: larger = member  [K, N]
        score = threshold_scores(kind, logits, labels)
        out[kind] = _loo_threshold(keep, score)
        out[f"{kind}_per_class"] = per_class_leave_one_out(keep, score, labels)
    phi = logit_scaled_confidence(logits, labels)
    return {
        **out,
        "lira_online": leave_one_out(keep, phi, LiRA(online=True, fixed_variance=False)),
        "lira_online_fixed": leave_one_out(keep, phi, LiRA(online=True, fixed_variance=True)),
        "lira_offline": leave_one_out(keep, phi, LiRA(online=False, fixed_variance=False)),
        "lira_offline_fixed": leave_one_out(keep, phi, LiRA(online=False, fixed_variance=True)),
    }


def run_attack(
    run_dirs: list[str | Path], out: str | Path = "runs", n_boot: int = 200, seed: int = 0
) -> dict[str, Any]:
    if n_boot < 0:
        raise FlatprivError(f"--bootstrap {n_boot}: must be >= 0")
    pools = [load_pool(d) for d in run_dirs]
    if any(not np.array_equal(p["train_labels"], pools[0]["train_labels"]) for p in pools[1:]):
        raise FlatprivError("the pools were trained on different data sets; compare pools of the same data")
    for p in pools:
        if p["keep"].shape[0] < MIN_MODELS:
            raise FlatprivError(
                f"{p['run_dir']}: the attacks need at least {MIN_MODELS} models (each in turn the target, the "
                f"others its shadows), this pool has {p['keep'].shape[0]}"
            )
    # Every score before the directory exists: an estimator's refusal then leaves nothing half-written.
    all_scores = [_pool_scores(p) for p in pools]
    out_dir = results.new_run_dir(out, "attack", Path(run_dirs[0]).name)
    results.write_json(
        out_dir / "config.json",
        {
            "sources": [str(Path(d).resolve()) for d in run_dirs],
            "attacks": list(ATTACKS),
            "n_boot": n_boot,
            "seed": seed,
        },
    )
    table, curves = [], {}
    for i, p in enumerate(pools):
        label = f"{i}:{p['config']['algorithm']}"
        summary = results.read_json(p["run_dir"] / "summary.json")
        for attack, (scores, members) in all_scores[i].items():
            m = attack_metrics(scores.ravel(), members.ravel(), n_boot=n_boot, seed=seed)
            delta = summary.get("delta") or 0.0
            audit = epsilon_lower_bound(scores.ravel(), members.ravel(), delta=delta)
            row = {
                "pool": label,
                "source": str(p["run_dir"]),
                "attack": attack,
                "test_accuracy": summary["test_accuracy"],
                "accountant_epsilon": summary.get("epsilon"),
                "epsilon_lower_bound": audit["eps_lower"],
                **m,
            }
            if p.get("canaries") is not None:  # the same audit on the mislabelled canaries alone
                c = p["canaries"]
                row["epsilon_lower_bound_canaries"] = epsilon_lower_bound(
                    scores[:, c].ravel(), members[:, c].ravel(), delta=delta
                )["eps_lower"]
                row["n_canaries"] = int(len(c))
            table.append(row)
            if attack in ("loss", "lira_online_fixed"):
                r = roc(scores.ravel(), members.ravel())
                curves[f"{label} {attack}"] = (r.fpr, r.tpr)
            if attack == "lira_online_fixed":  # per-example vulnerability: mean score over targets holding it
                with warnings.catch_warnings():  # an example no model held gets NaN, by design
                    warnings.simplefilter("ignore", RuntimeWarning)
                    vuln = np.nanmean(np.where(members, scores, np.nan), axis=0)
                results.save_array(out_dir, f"vulnerability_pool{i}", vuln)
            results.save_array(out_dir, f"scores_{attack}_pool{i}", scores.astype(np.float32))
    plot_roc(curves, out_dir / "plots" / "roc_loglog.png", title="membership inference (log-log ROC)")
    summary = {"kind": "attack", "pools": [str(d) for d in run_dirs], "table": table, "run_dir": str(out_dir)}
    results.write_json(out_dir / "summary.json", summary)
    return summary
