"""``flatpriv sharpness``: the parameter-space sharpness of a finished single run's final model.

λ_max (power iteration) and tr ∇²L (Hutchinson) of the training loss, cross-entropy averaged over the run's own
training set (its labels as trained on, label noise included) or over a fixed random subset of it
(:mod:`flatpriv.step.sharpness` holds the estimators and their formulas). Nothing is written: the summary is the
command's result (``--json`` prints it as one line).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from .. import progress, results
from ..config import config_from_dict
from ..data import load_data
from ..errors import FlatprivError
from ..models import build_model, resolve_device
from ..step.sharpness import fixed_subset, hessian_trace, top_eigenvalue


def load_run_model(run_dir: Path) -> tuple[Any, torch.nn.Module, Any]:
    """(config, the model holding the run's final weights, the run's data) of a finished single run."""
    if not results.is_run_dir(run_dir):
        raise FlatprivError(f"{run_dir} is not a run directory (no config.json)")
    if (run_dir / "pool.json").is_file():
        raise FlatprivError(f"{run_dir} is a pool; flatpriv sharpness measures a single run's model.pt")
    if not (run_dir / "model.pt").is_file():
        raise FlatprivError(f"{run_dir} has no model.pt (unfinished run, or trained with train.save_model=false)")
    cfg = config_from_dict(results.read_json(run_dir / "config.json"))
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    weights = results.load_tensors(run_dir / "model.pt", device)  # weights_only=True: never unpickles code
    try:
        model.load_state_dict(weights)
    except (AttributeError, TypeError, RuntimeError) as e:  # plain tensors, but not this model's weights
        raise FlatprivError(f"{run_dir}: model.pt does not fit the model in config.json") from e
    return cfg, model, data


def run_sharpness(
    run_dir: str | Path,
    subset: int | None = None,
    iters: int = 100,
    tol: float = 1e-4,
    probes: int = 100,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """λ_max and the Hessian trace of a run's training loss at its final weights; returns the summary. ``quiet``: no
    bar over the Hessian-vector products, one per evaluation batch (it shows only on a terminal)."""
    run_dir = Path(run_dir)
    cfg, model, data = load_run_model(run_dir)
    n = len(data.y_train)
    if subset is not None and not 1 <= subset <= n:
        raise FlatprivError(f"--subset {subset}: the run has {n} training examples; choose 1..{n}")
    indices = None if subset is None else fixed_subset(n, subset, seed)
    batch_size = cfg.train.eval_batch_size if batch_size is None else batch_size
    common = dict(indices=indices, seed=seed, batch_size=batch_size)
    t0 = time.perf_counter()
    batches = math.ceil((n if subset is None else subset) / max(1, batch_size))
    # at most `iters` power iterations, then `probes` probes, each a product over every batch; the total shrinks to
    # what is left once the power iteration has converged
    with progress.bar(desc="sharpness", total=(iters + probes) * batches, unit="hvp", quiet=quiet) as bar:
        try:
            bar.set_postfix_str("lambda_max")
            top = top_eigenvalue(model, data.x_train, data.y_train, iters=iters, tol=tol, progress=bar.update, **common)
            bar.total = bar.n + probes * batches
            bar.set_postfix_str("trace")
            trace = hessian_trace(model, data.x_train, data.y_train, probes=probes, progress=bar.update, **common)
        except ValueError as e:
            raise FlatprivError(str(e)) from e
    return {
        "kind": "sharpness",
        "source": str(run_dir),
        "algorithm": cfg.algorithm,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "examples": top.examples,
        "subset": subset,
        "seed": seed,
        "lambda_max": top.value,
        "iterations": top.iterations,
        "converged": top.converged,
        "dominant_eigenvalue": top.dominant,
        "iters": iters,
        "tol": tol,
        "trace_mean": trace.mean,
        "trace_stderr": trace.stderr,
        "probes": probes,
        "dtype": "float32",
        "device": str(data.x_train.device),
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }


def pool_sharpness(
    run_dir: str | Path,
    models: int,
    subset: int | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    probes: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """λ_max and tr ∇²L of the first ``models`` models of a pool trained with ``--save-weights``, each on the same
    training examples (its labels as trained on) and with the same probes; one dict per model."""
    from .curvature import pool_weights  # the pool's saved weights, read without unpickling

    run_dir = Path(run_dir)
    cfg = config_from_dict(results.read_json(run_dir / "config.json"))
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    n = len(data.y_train)
    indices = None if subset is None else fixed_subset(n, min(subset, n), seed)
    out = []
    for k, w in enumerate(pool_weights(run_dir)[:models]):
        params = {name: v.to(device) for name, v in w.items()}
        if set(params) != {name for name, _ in model.named_parameters()}:
            raise FlatprivError(f"{run_dir}: the saved weights do not fit the model in config.json")
        common = dict(params=params, indices=indices, seed=seed, batch_size=cfg.train.eval_batch_size)
        top = top_eigenvalue(model, data.x_train, data.y_train, iters=iters, tol=tol, **common)
        trace = hessian_trace(model, data.x_train, data.y_train, probes=probes, **common)
        out.append(
            {
                "model": k,
                "lambda_max": top.value,
                "converged": top.converged,
                "trace_mean": trace.mean,
                "trace_stderr": trace.stderr,
                "examples": top.examples,
            }
        )
    return out
