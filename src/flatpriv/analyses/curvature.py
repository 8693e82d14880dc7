"""``flatpriv curvature``: per-example input-loss curvature of a trained model or of a pool's models.

For a single run the scores are those of its final model, or, when it was trained with
``train.curvature_every = k``, the mean over the curvature kept every k epochs (the final model's is saved too).
For a pool (trained with ``--save-weights``) each model scores every training example and the scores are
aggregated over the models that had the example IN (mean, and max as in the authors' code); the pool's
Feldman–Zhang memorization is computed alongside and the Spearman rank correlation between the two is
reported (science.md §3.3, Garg et al. 2024).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from .. import plots, progress, results
from ..config import config_from_dict
from ..data import load_data
from ..errors import FlatprivError
from ..memorization import correctness, memorization
from ..memorization.curvature import aggregate, input_curvature
from ..models import build_model, resolve_device
from .memorization import load_pool


def pool_weights(run_dir: Path) -> list[dict[str, torch.Tensor]]:
    chunks = sorted((run_dir / "chunks").glob("chunk-*.npz"))
    models = []
    for path in chunks:
        z = results.load_array(path)
        names = [k for k in z if k.startswith("param/")]
        if not names:
            raise FlatprivError(f"{run_dir}: the pool kept no weights; train it with `flatpriv pool --save-weights`")
        for k in range(z[names[0]].shape[0]):
            models.append({n[len("param/") :]: torch.from_numpy(z[n][k]) for n in names})
    return models


def _weights(run_dir: Path, is_pool: bool, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every model's weights: a pool's (saved with --save-weights), or a run's model.pt."""
    if is_pool:
        return pool_weights(run_dir)
    if (run_dir / "model.pt").is_file():
        return [results.load_tensors(run_dir / "model.pt", device)]
    raise FlatprivError(f"{run_dir} has no model.pt (unfinished run, or trained with train.save_model=false)")


def _curvature(
    model: torch.nn.Module,
    w: dict[str, torch.Tensor],
    data: Any,
    run_dir: Path,
    n_probes: int,
    h: float,
    variant: str,
    method: str,
    seed: int,
    bar: Any,
) -> torch.Tensor:
    """One model's per-example curvature, with the same probes for every model (seeded alike)."""
    device = data.x_train.device
    try:
        model.load_state_dict({k: v.to(device) for k, v in w.items()})
    except (AttributeError, TypeError, RuntimeError) as e:  # plain tensors, but not this model's weights
        raise FlatprivError(f"{run_dir}: the saved weights do not fit the model in config.json") from e
    try:
        return input_curvature(
            model,
            data.x_train,
            data.y_train,
            n_probes=n_probes,
            h=h,
            variant=variant,
            method=method,
            generator=torch.Generator().manual_seed(seed),
            progress=bar.update,
        )
    except ValueError as e:
        raise FlatprivError(str(e)) from e


def run_curvature(
    run_dir: str | Path,
    out: str | Path = "runs",
    n_probes: int = 10,
    h: float = 1e-3,
    variant: str = "norm",
    method: str = "finite_difference",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Per-example curvature of a run's model or a pool's models into a new run directory; returns summary.json.
    ``quiet``: no bar over the (model, example) scores (it shows only on a terminal)."""
    run_dir = Path(run_dir)
    if not results.is_run_dir(run_dir):
        raise FlatprivError(f"{run_dir} is not a run directory (no config.json)")
    cfg = config_from_dict(results.read_json(run_dir / "config.json"))
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    is_pool = (run_dir / "pool.json").is_file()
    pool = load_pool(run_dir) if is_pool else None
    weights = _weights(run_dir, is_pool, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    desc = f"curvature ({len(weights)} model{'s' if len(weights) > 1 else ''})"
    with progress.bar(
        desc=desc, total=len(weights) * len(data.y_train), unit="example", unit_scale=True, quiet=quiet
    ) as bar:
        per_model = [_curvature(model, w, data, run_dir, n_probes, h, variant, method, seed, bar) for w in weights]
    out_dir = results.new_run_dir(out, "curvature", run_dir.name)
    results.write_json(
        out_dir / "config.json",
        {
            "source": str(run_dir.resolve()),
            "n_probes": n_probes,
            "h": h,
            "variant": variant,
            "method": method,
            "seed": seed,
        },
    )
    summary: dict[str, Any] = {
        "kind": "curvature",
        "source": str(run_dir),
        "models": len(weights),
        "variant": variant,
        "method": method,
        "n_probes": n_probes,
        "h": h,
    }
    if pool is not None:
        mask = torch.as_tensor(pool["keep"])
        curv = aggregate(torch.stack(per_model), "mean", mask).numpy()
        results.save_array(out_dir, "curvature_max", aggregate(torch.stack(per_model), "max", mask).numpy())
        mem = memorization(pool["keep"], correctness(pool["train_logits"], pool["train_labels"])).score
        results.save_array(out_dir, "memorization", mem)
        ok = np.isfinite(curv) & np.isfinite(mem)
        summary["spearman_curvature_memorization"] = float(spearmanr(curv[ok], mem[ok]).statistic)
        summary["n_correlated"] = int(ok.sum())
    else:
        curv = per_model[0].numpy()
        during = sorted((run_dir / "arrays").glob("curvature_epoch_*.npy"))
        if during:  # the training run kept curvature every k epochs: average over training (science.md §3.3)
            stacked = np.stack([results.load_array(f) for f in during])
            results.save_array(out_dir, "curvature_final", curv)
            curv = stacked.mean(0)
            summary["aggregated_over_epochs"] = [int(f.stem.rsplit("_", 1)[1]) for f in during]
    results.save_array(out_dir, "curvature", curv)
    flipped = data.meta.get("flipped")
    if flipped is not None and len(flipped) and not is_pool:
        from sklearn.metrics import roc_auc_score

        is_flipped = np.zeros(len(curv), dtype=bool)
        is_flipped[flipped] = True
        summary["mislabel_auroc"] = float(roc_auc_score(is_flipped, curv))
    summary.update(
        curvature_mean=float(np.nanmean(curv)), curvature_median=float(np.nanmedian(curv)), run_dir=str(out_dir)
    )
    plots.histogram(
        {variant: curv},
        out_dir / "plots" / "curvature_hist.png",
        f"input-loss curvature ({variant})",
        f"curvature over {len(curv)} training examples",
    )
    results.write_json(out_dir / "summary.json", summary)
    return summary
