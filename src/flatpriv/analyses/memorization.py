"""Analyses of a finished pool: read its arrays, call the array-only estimators, write a new run directory.

An analysis never writes into the pool it reads: its results go to ``<out>/<command>-<pool name>-...`` with a
config.json naming the source directory, so re-running it can never overwrite earlier results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots, progress, results
from ..errors import FlatprivError
from ..memorization import bucket_comparison, check_pool, correctness, entropy_buckets, influence, memorization
from ..memorization.entropy import influence_entropy


def load_pool(run_dir: str | Path) -> dict[str, Any]:
    """The arrays of a pool run directory, checked; a clear one-line error for anything else."""
    run_dir = Path(run_dir)
    if not (run_dir / "pool.json").is_file():
        raise FlatprivError(f"{run_dir} is not a pool run directory (no pool.json): make one with `flatpriv pool`")
    if not (run_dir / "summary.json").is_file():
        raise FlatprivError(f"{run_dir}: the pool has not finished (resume it with `flatpriv pool --resume`)")
    arrays = {
        name: results.load_array(run_dir / "arrays" / f"{name}.npy")
        for name in ("keep", "train_logits", "test_logits", "train_labels", "test_labels")
    }
    if arrays["keep"].all():
        raise FlatprivError(
            f"{run_dir}: every model was trained on every example (--keep 1, a seed sweep): memorization and "
            "attacks need models that left each example out"
        )
    arrays["train_logits"] = arrays["train_logits"].astype(np.float32)
    arrays["test_logits"] = arrays["test_logits"].astype(np.float32)
    check_pool(
        arrays["keep"],
        arrays["train_logits"],
        arrays["train_labels"],
        test_logits=arrays["test_logits"],
        test_labels=arrays["test_labels"],
    )
    for name in ("train_logits_views", "test_logits_views"):  # query views: pools trained with augmentation
        path = run_dir / "arrays" / f"{name}.npy"
        arrays[name] = results.load_array(path).astype(np.float32) if path.exists() else None
    views, test_views = arrays["train_logits_views"], arrays["test_logits_views"]
    if views is not None and (
        test_views is None
        or views.shape[0] != arrays["train_logits"].shape[0]
        or views.shape[2:] != arrays["train_logits"].shape[1:]
        or test_views.shape[:2] != views.shape[:2]
        or test_views.shape[2:] != arrays["test_logits"].shape[1:]
        or not (np.isfinite(views).all() and np.isfinite(test_views).all())
    ):
        raise FlatprivError(f"{run_dir}: the query-view logits do not match the pool's logits (or are not finite)")
    canaries = run_dir / "arrays" / "canaries.npy"
    arrays["canaries"] = results.load_array(canaries) if canaries.exists() else None
    arrays["config"] = results.read_json(run_dir / "config.json")
    arrays["run_dir"] = run_dir
    return arrays


def run_memorization(
    run_dir: str | Path,
    compare: str | Path | None = None,
    kind: str = "correct",
    out: str | Path = "runs",
    n_buckets: int = 5,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Feldman–Zhang memorization (with standard errors) and influence of a pool; paper 1's influence entropy;
    with ``compare``, per-entropy-bucket test accuracy of both pools and its difference (bootstrap 95 % CI).
    ``quiet``: no bar over these steps (it shows only on a terminal)."""
    with progress.Steps("memorization", 5 if compare else 4, quiet) as steps:
        return _memorization(run_dir, compare, kind, out, n_buckets, seed, steps)


def _memorization(
    run_dir: str | Path,
    compare: str | Path | None,
    kind: str,
    out: str | Path,
    n_buckets: int,
    seed: int,
    steps: progress.Steps,
) -> dict[str, Any]:
    steps.next("reading the pools")
    pool = load_pool(run_dir)
    other = load_pool(compare) if compare else None
    if other is not None and not (
        np.array_equal(other["train_labels"], pool["train_labels"])
        and np.array_equal(other["test_labels"], pool["test_labels"])
    ):
        raise FlatprivError(f"{compare} and {run_dir} were trained on different data sets; they cannot be compared")
    steps.next("memorization")
    corr = correctness(pool["train_logits"], pool["train_labels"], kind)
    corr_test = correctness(pool["test_logits"], pool["test_labels"], kind)
    mem = memorization(pool["keep"], corr)
    steps.next("influence and its entropy")
    infl = influence(pool["keep"], corr_test)
    entropy = influence_entropy(infl, pool["train_labels"], pool["test_labels"])
    compared: dict[str, Any] = {}
    if other is not None:  # computed before the directory exists, so a refused bucket count leaves nothing behind
        steps.next("comparing the pools (bootstrap)")
        compared["mem"] = memorization(other["keep"], correctness(other["train_logits"], other["train_labels"], kind))
        compared["buckets"] = entropy_buckets(entropy, n_buckets)
        correct_a = correctness(pool["test_logits"], pool["test_labels"], "correct")
        correct_b = correctness(other["test_logits"], other["test_labels"], "correct")
        compared["table"] = bucket_comparison(compared["buckets"], correct_a, correct_b, seed=seed, entropy=entropy)
    steps.next("writing arrays and plots")
    out_dir = results.new_run_dir(out, "memorization", Path(run_dir).name)
    results.write_json(
        out_dir / "config.json",
        {
            "source": str(Path(run_dir).resolve()),
            "compare": str(Path(compare).resolve()) if compare else None,
            "kind": kind,
            "n_buckets": n_buckets,
            "seed": seed,
        },
    )
    for name, arr in (
        ("memorization", mem.score),
        ("memorization_stderr", mem.stderr),
        ("n_in", mem.n_in),
        ("n_out", mem.n_out),
        ("influence", infl),
        ("influence_entropy", entropy),
    ):
        results.save_array(out_dir, name, np.asarray(arr))
    hists = {pool["config"]["algorithm"]: mem.score}
    summary: dict[str, Any] = {
        "kind": "memorization",
        "source": str(run_dir),
        "models": int(pool["keep"].shape[0]),
        "examples": int(pool["keep"].shape[1]),
        "correctness": kind,
        "memorization_mean": float(np.nanmean(mem.score)),
        "memorization_median": float(np.nanmedian(mem.score)),
        "fraction_above_0.5": float(np.nanmean(mem.score > 0.5)),
        "undefined": int(np.isnan(mem.score).sum()),
        "influence_entropy_mean": float(np.nanmean(entropy)),
        "run_dir": str(out_dir),
    }
    if other is not None:
        results.save_array(out_dir, "memorization_compare", compared["mem"].score)
        hists[f"{other['config']['algorithm']} (compare)"] = compared["mem"].score
        results.save_array(out_dir, "entropy_bucket", compared["buckets"])
        summary["buckets"] = compared["table"]
        summary["compare"] = str(compare)
    plots.histogram(
        hists,
        out_dir / "plots" / "memorization_hist.png",
        "Feldman–Zhang memorization",
        f"memorization over {pool['keep'].shape[0]} models",
        value_range=(-1, 1),
    )
    results.write_json(out_dir / "summary.json", summary)
    return summary
