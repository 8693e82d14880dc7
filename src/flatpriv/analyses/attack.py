"""``flatpriv attack``: membership inference on one or more finished pools, into a new run directory.

Each pool model in turn is the target and the others are its references (LiRA's evaluation); scores are pooled
over targets. Attacks (:data:`ATTACKS`, each named for what it computes, :mod:`.attack_scores`): global and
per-class thresholds on the loss, the true-class confidence and the modified entropy (Song & Mittal 2021); LiRA
(Carlini et al. 2022) online / offline as the paper describes it and as its reference code computes it; RMIA
(Zarifzadeh et al. 2024) online / offline against the test set as population. For each pool and attack: AUC,
balanced accuracy, TPR at 0.1 % and 1 % FPR with bootstrap CIs and the counts they rest on; the one-run audit's
ε lower bound with its ceiling (per model and over the pool, when the pool's masks satisfy its assumption) and
the Clopper–Pearson bound (a heuristic, :mod:`.audits`), next to the accountant's ε when the pool is private.
With ``references``: LiRA and RMIA against the number of reference models (:mod:`.references`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress, results
from ..attacks.metrics import attack_metrics, plot_roc, roc
from ..errors import FlatprivError
from ..privacy.audit import epsilon_lower_bound
from . import audits
from .attack_scores import ATTACKS, AUG_SUFFIX, QUERY_AUGMENTED, PoolSignals, RmiaSettings
from .memorization import load_pool
from .references import parse_references, plot_references, reference_curve

ROC_ATTACKS = ("loss", "lira_online_fixed", "lira_online_fixed_aug", "rmia_online", "rmia_offline")
# The smallest pool the attacks accept: every model is a target once, and its shadows must hold each example both
# IN and OUT for LiRA's per-example fits (checked by load_pool's estimator checks at 4, and needed here at 5).
MIN_MODELS = 5


def _one_run(signals: PoolSignals, scores: np.ndarray, attack: str, delta: float, canaries: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "per_model": audits.per_model(scores, signals.keep, delta),
        "pool": audits.pooled(signals, attack, delta),
    }
    if canaries is not None:
        out["canaries_per_model"] = audits.per_model(scores, signals.keep, delta, columns=canaries)
        out["canaries_pool"] = audits.pooled(signals, attack, delta, columns=canaries)
    return out


def run_attack(
    run_dirs: list[str | Path],
    out: str | Path = "runs",
    n_boot: int = 200,
    seed: int = 0,
    references: str | list[int] | None = None,
    rmia: RmiaSettings | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every attack on every pool into a new run directory; returns its summary.json. ``quiet``: no bar over the
    (pool, attack) scores, metrics and reference counts (it shows only on a terminal)."""
    if n_boot < 0:
        raise FlatprivError(f"--bootstrap {n_boot}: must be >= 0")
    rmia = rmia or RmiaSettings()
    pools = [load_pool(d) for d in run_dirs]
    if any(not np.array_equal(p["train_labels"], pools[0]["train_labels"]) for p in pools[1:]):
        raise FlatprivError("the pools were trained on different data sets; compare pools of the same data")
    for p in pools:
        if p["keep"].shape[0] < MIN_MODELS:
            raise FlatprivError(
                f"{p['run_dir']}: the attacks need at least {MIN_MODELS} models (each in turn the target, the "
                f"others its shadows), this pool has {p['keep'].shape[0]}"
            )
    n_min = min(p["keep"].shape[0] for p in pools)
    counts = references if isinstance(references, list) else parse_references(references, n_min)
    if counts and counts[-1] > n_min - 1:
        raise FlatprivError(f"--references: a pool of {n_min} models has at most {n_min - 1} references per target")
    if rmia.offline_a == "auto":  # choose a on pool 0's model 0 (Privacy Meter's way), then use it everywhere
        from ..attacks.rmia import choose_offline_a

        s0 = PoolSignals(pools[0], RmiaSettings(rmia.gamma, 0.3, rmia.temperature))
        rmia = RmiaSettings(rmia.gamma, choose_offline_a(s0.keep, s0.px, s0.pz, rmia.gamma), rmia.temperature)
    work = len(pools) * (2 * len(_attacks(pools)) + len(counts))  # scores, metrics per (pool, attack); references
    with progress.bar(desc="attack", total=work, unit="step", quiet=quiet) as bar:
        return _attack(pools, run_dirs, out, n_boot, seed, counts, rmia, bar)


def _attacks(pools: list[dict[str, Any]]) -> tuple[str, ...]:
    """Every attack, and the query-augmented ones when every pool kept logits on query views."""
    views = all(p.get("train_logits_views") is not None for p in pools)
    return ATTACKS + (tuple(a + AUG_SUFFIX for a in QUERY_AUGMENTED) if views else ())


def _scores(signals: PoolSignals, label: str, attacks: tuple[str, ...], bar: Any) -> dict[str, np.ndarray]:
    """Each attack's leave-one-out scores [models, examples] on one pool."""
    scores = {}
    for attack in attacks:
        bar.set_postfix_str(f"{label} {attack}: scores")
        scores[attack] = signals.leave_one_out(attack)
        bar.update()
    return scores


def _attack(
    pools: list[dict[str, Any]],
    run_dirs: list[str | Path],
    out: str | Path,
    n_boot: int,
    seed: int,
    counts: list[int],
    rmia: RmiaSettings,
    bar: Any,
) -> dict[str, Any]:
    # Every score before the directory exists: an estimator's refusal then leaves nothing half-written.
    labels = [f"{i}:{p['config']['algorithm']}" for i, p in enumerate(pools)]
    all_signals = [PoolSignals(p, rmia) for p in pools]
    attacks = _attacks(pools)
    all_scores = [_scores(s, label, attacks, bar) for s, label in zip(all_signals, labels)]
    out_dir = results.new_run_dir(out, "attack", Path(run_dirs[0]).name)
    results.write_json(
        out_dir / "config.json",
        {
            "sources": [str(Path(d).resolve()) for d in run_dirs],
            "attacks": list(attacks),
            "n_boot": n_boot,
            "seed": seed,
            "references": counts,
            "rmia": {"gamma": rmia.gamma, "offline_a": rmia.offline_a, "temperature": rmia.temperature},
        },
    )
    table, curves, ref_rows, notes = [], {}, [], {}
    for i, p in enumerate(pools):
        label = labels[i]
        summary = results.read_json(p["run_dir"] / "summary.json")
        meta = results.read_json(p["run_dir"] / "pool.json")
        delta = summary.get("delta") or 0.0
        not_applicable = audits.one_run_not_applicable(meta)
        if not_applicable:
            notes[label] = f"one-run audit not applicable: {not_applicable}"
        signals = all_signals[i]
        for attack in attacks:
            bar.set_postfix_str(f"{label} {attack}: metrics")
            scores, members = all_scores[i][attack], signals.keep
            m = attack_metrics(scores.ravel(), members.ravel(), n_boot=n_boot, seed=seed)
            audit = epsilon_lower_bound(scores.ravel(), members.ravel(), delta=delta)
            row = {
                "pool": label,
                "source": str(p["run_dir"]),
                "attack": attack,
                "variant": signals.variant(attack),
                "test_accuracy": summary["test_accuracy"],
                "accountant_epsilon": summary.get("epsilon"),
                "delta": delta,
                "epsilon_lower_bound": audit["eps_lower"],
                "epsilon_lower_bound_kind": audits.CP_KIND,
                **m,
            }
            if p.get("canaries") is not None:  # the same heuristic bound on the mislabelled canaries alone
                c = p["canaries"]
                row["epsilon_lower_bound_canaries"] = epsilon_lower_bound(
                    scores[:, c].ravel(), members[:, c].ravel(), delta=delta
                )["eps_lower"]
                row["n_canaries"] = int(len(c))
            if not_applicable:
                row["one_run"] = None
            else:
                row["one_run"] = _one_run(signals, scores, attack, delta, p.get("canaries"))
                row["eps_one_run_model0"] = row["one_run"]["per_model"]["model0"]["eps_lower"]
                row["eps_one_run_model0_ceiling"] = row["one_run"]["per_model"]["model0"]["ceiling"]
                row["eps_one_run_pool"] = row["one_run"]["pool"]["eps_lower"]
                row["eps_one_run_pool_ceiling"] = row["one_run"]["pool"]["ceiling"]
            table.append(row)
            if attack in ROC_ATTACKS:
                r = roc(scores.ravel(), members.ravel())
                curves[f"{label} {attack}"] = (r.fpr, r.tpr)
            if attack == "lira_online_fixed":  # per-example vulnerability: mean score over targets holding it
                with warnings.catch_warnings():  # an example no model held gets NaN, by design
                    warnings.simplefilter("ignore", RuntimeWarning)
                    vuln = np.nanmean(np.where(members, scores, np.nan), axis=0)
                results.save_array(out_dir, f"vulnerability_pool{i}", vuln)
            results.save_array(out_dir, f"scores_{attack}_pool{i}", scores.astype(np.float32))
            bar.update()
        if counts:
            bar.set_postfix_str(f"{label}: reference counts")
            ref_rows += [{"pool": label, **r} for r in reference_curve(signals, counts, seed, progress=bar.update)]
    plot_roc(curves, out_dir / "plots" / "roc_loglog.png", title="membership inference (log-log ROC)")
    summary = {"kind": "attack", "pools": [str(d) for d in run_dirs], "table": table, "run_dir": str(out_dir)}
    summary["variants"] = {a: signals.variant(a) for a in attacks}
    summary["audits"] = {
        "epsilon_lower_bound": audits.CP_KIND,
        "one_run": "Steinke, Nasr, Jagielski 2023 at 95 %, Bonferroni over (k+, k-); per model (model 0) and over "
        "the pool (first half audited against references from the second half); ceiling = the bound with every "
        "guess correct",
        "notes": notes,
    }
    if counts:
        summary["references"] = ref_rows
        plot_references(ref_rows, out_dir / "plots" / "references.png", "attack strength against reference models")
    results.write_json(out_dir / "summary.json", summary)
    return summary
