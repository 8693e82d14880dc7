"""The CLI's commands: each turns parsed arguments into one library call and prints what a person wants to see.

Each returns the JSON-able result that ``--json`` prints as the last line of stdout.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import FlatprivError


def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    from ..config_io import resolve
    from ..progress import check_log_every
    from ..train import resume, train

    log_every = check_log_every(a.log_every, "--log-every")
    if a.resume:
        if a.preset or a.config or a.overrides or a.device:
            raise FlatprivError("--resume continues a run with its saved config; drop --preset/--config/--set/--device")
        summary = resume(a.resume, quiet=a.quiet or a.json, log_every=log_every)
    else:
        overrides = list(a.overrides) + ([f"train.device={a.device}"] if a.device else [])
        cfg, name = resolve(a.preset, a.config, overrides)
        summary = train(cfg, name=name, out=a.out, quiet=a.quiet or a.json, log_every=log_every)
    if not a.json:
        print(f"run directory: {summary['run_dir']}")
        if not summary.get("finished", True):
            epoch = summary["interrupted_after_epoch"]
            print(
                f"interrupted after epoch {epoch}; continue with `flatpriv train --resume {summary['run_dir']}`"
                if epoch
                else "interrupted before the first epoch ended: nothing to resume (the run directory holds no "
                "checkpoint)"
            )
        else:
            print(
                f"{summary['algorithm']} on {summary['dataset']}/{summary['model']}: "
                f"test accuracy {summary['test_accuracy']:.4f}, train accuracy {summary['train_accuracy']:.4f}, "
                f"{summary['steps']} steps in {summary['wall_seconds']:.1f} s"
            )
            _print_privacy(summary)
    return summary


def _print_privacy(summary: dict[str, Any]) -> None:
    """The guarantee a DP run (or pool) gives, on the console as well as in summary.json."""
    if summary.get("epsilon") is not None:
        print(f"privacy: epsilon = {summary['epsilon']:.4f} at delta = {summary['delta']:g}; {summary['accountant']}")
    elif summary.get("epsilon_note"):
        print(f"privacy: none ({summary['epsilon_note']})")
    if summary.get("noise_source"):
        print(f"privacy: noise and Poisson sampling from {summary['noise_source']}")


# What pool.json fixes when a pool starts; `pool --resume` refuses each of them rather than ignore it.
POOL_SHAPE = ("models", "keep", "keep_mode", "chunk_size", "memory_budget", "save_weights", "canaries")


def cmd_pool(a: argparse.Namespace) -> dict[str, Any]:
    from ..config_io import resolve
    from ..pools.run import resume_pool, train_pool

    if a.resume:
        if a.preset or a.config or a.overrides or a.device:
            raise FlatprivError("--resume finishes a pool with its saved config; drop --preset/--config/--set/--device")
        given = [
            f"--{k.replace('_', '-')}" for k in POOL_SHAPE if getattr(a, k) is not None and getattr(a, k) is not False
        ]
        if given:
            raise FlatprivError(
                f"--resume finishes a pool with its saved models, masks and chunks (pool.json); drop {'/'.join(given)}"
            )
        summary = resume_pool(a.resume, quiet=a.quiet or a.json, backend=a.backend, ray_address=a.ray_address)
    else:
        overrides = list(a.overrides) + ([f"train.device={a.device}"] if a.device else [])
        cfg, name = resolve(a.preset, a.config, overrides)
        summary = train_pool(
            cfg,
            16 if a.models is None else a.models,
            0.5 if a.keep is None else a.keep,
            a.chunk_size,
            name=name,
            out=a.out,
            quiet=a.quiet or a.json,
            save_weights=a.save_weights,
            canaries=a.canaries or 0,
            backend=a.backend,
            ray_address=a.ray_address,
            keep_mode=a.keep_mode or "exact",
            memory_budget=a.memory_budget,
        )
    if not a.json:
        print(f"run directory: {summary['run_dir']}")
        if not summary.get("finished", True):
            print(
                f"interrupted after {summary['interrupted_after_chunk']} finished chunk(s); continue with "
                f"`flatpriv pool --resume {summary['run_dir']}`"
            )
        elif "models" in summary:
            print(
                f"pool of {summary['models']} {summary['algorithm']} models on {summary['dataset']}/"
                f"{summary['model']}: mean test accuracy {summary['test_accuracy']:.4f} "
                f"(sd {summary['test_accuracy_sd']:.4f}), mean train accuracy on kept examples "
                f"{summary['train_accuracy']:.4f}, {summary['wall_seconds']:.1f} s"
            )
            _print_privacy(summary)
    return summary


def cmd_memorization(a: argparse.Namespace) -> dict[str, Any]:
    from ..analyses.memorization import run_memorization

    summary = run_memorization(
        a.run_dir, compare=a.compare, kind=a.kind, out=a.out, n_buckets=a.buckets, quiet=a.quiet or a.json
    )
    if not a.json:
        print(f"run directory: {summary['run_dir']}")
        print(
            f"memorization over {summary['models']} models, {summary['examples']} examples: mean "
            f"{summary['memorization_mean']:.4f}, median {summary['memorization_median']:.4f}, "
            f"{100 * summary['fraction_above_0.5']:.1f} % above 0.5, {summary['undefined']} undefined (NaN)"
        )
        for b in summary.get("buckets", []):
            print(
                f"  entropy bucket {b['bucket']} (n={b['n']}): accuracy {b['acc_a']:.4f} -> {b['acc_b']:.4f}, "
                f"difference {b['diff']:+.4f} [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]"
            )
    return summary


def _rmia_a(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        a = float(text)
    except ValueError:
        raise FlatprivError(f"--rmia-a {text!r}: expected a number in [0, 1] or 'auto'") from None
    if not 0 <= a <= 1:
        raise FlatprivError(f"--rmia-a {text}: must lie in [0, 1]")
    return a


def _eps1(value: float | None, ceiling: float | None) -> str:
    return "-" if value is None else f"{value:.2f}/{ceiling:.1f}"


def cmd_attack(a: argparse.Namespace) -> dict[str, Any]:
    from ..analyses.attack import run_attack
    from ..analyses.attack_scores import RmiaSettings

    if a.rmia_gamma <= 0 or a.rmia_temperature <= 0:
        raise FlatprivError("--rmia-gamma and --rmia-temperature must be > 0")
    rmia = RmiaSettings(a.rmia_gamma, _rmia_a(a.rmia_a), a.rmia_temperature)
    summary = run_attack(
        a.run_dirs,
        out=a.out,
        n_boot=a.bootstrap,
        seed=a.seed,
        references=a.references,
        rmia=rmia,
        quiet=a.quiet or a.json,
    )
    if not a.json:
        print(f"run directory: {summary['run_dir']}  (ROC: plots/roc_loglog.png)")
        print(
            f"{'pool':<10} {'attack':<28} {'AUC':>6} {'bal.acc':>7} {'TPR@0.1%':>9} {'TPR@1%':>7} "
            f"{'eps1 model0':>11} {'eps1 pool':>10} {'epsCP(heur)':>11} {'eps':>6}  n_in/n_out"
        )
        for r in summary["table"]:
            eps = "-" if r["accountant_epsilon"] is None else f"{r['accountant_epsilon']:.2f}"
            print(
                f"{r['pool']:<10} {r['attack']:<28} {r['auc']:>6.3f} {r['balanced_accuracy']:>7.3f} "
                f"{r['tpr_at_0.1%fpr']:>9.4f} {r['tpr_at_1%fpr']:>7.4f} "
                f"{_eps1(r.get('eps_one_run_model0'), r.get('eps_one_run_model0_ceiling')):>11} "
                f"{_eps1(r.get('eps_one_run_pool'), r.get('eps_one_run_pool_ceiling')):>10} "
                f"{r['epsilon_lower_bound']:>11.3f} {eps:>6}  {r['n_members']}/{r['n_nonmembers']}"
                + (
                    f"  epsCP on {r['n_canaries']} canaries {r['epsilon_lower_bound_canaries']:.3f}"
                    if "n_canaries" in r
                    else ""
                )
            )
        print("eps1: one-run audit (Steinke et al. 2023), 95 %, bound/ceiling; epsCP: Clopper-Pearson, a heuristic")
        for note in summary["audits"]["notes"].values():
            print(f"  {note}")
        print("variants:")
        for name, what in summary["variants"].items():
            print(f"  {name:<28} {what}")
        if "references" in summary:
            print("reference models per target (plots/references.png):")
            print(f"  {'pool':<10} {'attack':<28} {'refs':>5} {'AUC':>6} {'TPR@1%':>7} {'NaN dropped':>11}")
            for r in summary["references"]:
                auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
                tpr = "-" if r["tpr_at_1%fpr"] is None else f"{r['tpr_at_1%fpr']:.4f}"
                print(
                    f"  {r['pool']:<10} {r['attack']:<28} {r['references']:>5} {auc:>6} {tpr:>7} "
                    f"{r['n_dropped_nan']:>11}"
                )
    return summary


def cmd_curvature(a: argparse.Namespace) -> dict[str, Any]:
    from ..analyses.curvature import run_curvature

    summary = run_curvature(
        a.run_dir,
        out=a.out,
        n_probes=a.probes,
        h=a.h,
        variant=a.variant,
        method=a.method,
        seed=a.seed,
        quiet=a.quiet or a.json,
    )
    if not a.json:
        print(f"run directory: {summary['run_dir']}  (histogram: plots/curvature_hist.png)")
        line = (
            f"curvature ({summary['variant']}) over {summary['models']} model(s): mean {summary['curvature_mean']:.4g}"
        )
        if "spearman_curvature_memorization" in summary:
            line += f"; Spearman with memorization {summary['spearman_curvature_memorization']:.3f}"
        if "mislabel_auroc" in summary:
            line += f"; AUROC for the flipped labels {summary['mislabel_auroc']:.3f}"
        print(line)
    return summary


def cmd_sharpness(a: argparse.Namespace) -> dict[str, Any]:
    from ..analyses.sharpness import run_sharpness

    summary = run_sharpness(
        a.run_dir,
        subset=a.subset,
        iters=a.iters,
        tol=a.tol,
        probes=a.probes,
        seed=a.seed,
        batch_size=a.batch_size,
        quiet=a.quiet or a.json,
    )
    if not a.json:
        state = "converged" if summary["converged"] else "not converged"
        print(
            f"sharpness of {summary['algorithm']} on {summary['dataset']}/{summary['model']} over "
            f"{summary['examples']} training examples: lambda_max {summary['lambda_max']:.6g} "
            f"({summary['iterations']} iterations, {state}), trace {summary['trace_mean']:.6g} "
            f"+- {summary['trace_stderr']:.3g} (standard error, {summary['probes']} probes); "
            f"{summary['wall_seconds']:.1f} s"
        )
    return summary


def cmd_presets(a: argparse.Namespace) -> dict[str, Any]:
    from ..config_io import describe_presets

    rows = describe_presets()
    if not a.json:
        width = max(len(n) for n, _ in rows)
        for name, desc in rows:
            print(f"{name:<{width}}  {desc}")
    return {"presets": {n: d for n, d in rows}}


def cmd_algorithms(a: argparse.Namespace) -> dict[str, Any]:
    from ..step import ALGORITHMS

    if not a.json:
        width = max(len(n) for n in ALGORITHMS)
        for alg in ALGORITHMS.values():
            print(f"{alg.name:<{width}}  {alg.rule}")
    return {"algorithms": {n: alg.rule for n, alg in ALGORITHMS.items()}}


def cmd_privacy(a: argparse.Namespace) -> dict[str, Any]:
    from ..privacy.accounting import NEIGHBOURING, accountant_description, calibrate_noise, epsilon

    common = {
        "sample_rate": a.sample_rate,
        "steps": a.steps,
        "delta": a.delta,
        "accountant": a.accountant,
        "releases_per_step": a.releases_per_step,
    }
    if a.privacy_command == "epsilon":
        value = epsilon(a.noise_multiplier, **common)
        result = {"epsilon": value, "noise_multiplier": a.noise_multiplier}
        line = f"epsilon = {value:.4f}"
    else:
        sigma = calibrate_noise(a.target_epsilon, **common)
        value = epsilon(sigma, **common)
        result = {"noise_multiplier": sigma, "epsilon": value, "target_epsilon": a.target_epsilon}
        line = f"noise_multiplier = {sigma:.4f} (epsilon = {value:.4f} <= {a.target_epsilon})"
    result.update(common, accountant=accountant_description(a.accountant), neighbouring=NEIGHBOURING)
    if not a.json:
        print(
            f"{line} at delta = {a.delta:g}, q = {a.sample_rate:g}, {a.steps} steps x {a.releases_per_step} "
            f"release(s); {result['accountant']}"
        )
    return result
