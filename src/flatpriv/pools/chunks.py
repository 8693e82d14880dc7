"""One chunk of a pool: trained from plain data (what a Ray task receives), checked, saved, and read back.

A chunk is saved only when every model in it ended finite, and it counts as trained only when it reads back
whole, so a diverged or truncated chunk is trained again on resume instead of poisoning the pool.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import progress, results
from ..config import config_from_dict
from ..data import load_data
from ..errors import FlatprivError
from ..models import resolve_device
from .plain import train_models

VIEW_LOGITS = ("train_logits_views", "test_logits_views")  # [K, V, N, C] logits on the query views (augmented pools)


def chunk_arrays(
    cfg_dict: dict[str, Any],
    keep_rows: np.ndarray,
    seeds: list[int],
    canaries: np.ndarray | None,
    canary_labels: np.ndarray | None,
    save_weights: bool,
    quiet: bool = True,
) -> dict[str, np.ndarray]:
    """Train one chunk of models from plain data (what a Ray task receives) and return its arrays; ``quiet=False``
    shows the chunk's own bar over its epochs (steps for DP) under the pool's (local chunks only)."""
    cfg = config_from_dict(cfg_dict)
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    if canaries is not None:  # the audit's canaries: training examples given a wrong label in every model
        data.y_train[torch.as_tensor(canaries, device=device)] = torch.as_tensor(canary_labels, device=device)
    r = train_models(cfg, data, keep_rows, seeds, quiet=quiet)
    check_diverged(r, [k - cfg.seed for k in seeds])
    arrays = {
        # float32, as computed: float16 turned finite logits above 65504 into inf, and the pool was then "corrupt"
        "train_logits": np.asarray(r["train_logits"].cpu(), dtype=np.float32),
        "test_logits": np.asarray(r["test_logits"].cpu(), dtype=np.float32),
        "train_accuracy": r["train_accuracy"],
        "test_accuracy": r["test_accuracy"],
        **{k: np.asarray(r[k]) for k in ("epsilon", "noise_multiplier", "sample_rate", "releases") if k in r},
        **{k: np.asarray(r[k].cpu(), dtype=np.float32) for k in VIEW_LOGITS if k in r},
        **({"query_views": r["query_views"]} if "query_views" in r else {}),
    }
    if save_weights:
        arrays.update({f"param/{k}": v.cpu().numpy() for k, v in r["params"].items()})
    return arrays


def check_diverged(r: dict[str, Any], models: list[int]) -> None:
    """Refuse a chunk with a non-finite weight or logit (before it is saved, so a resume retrains it)."""
    finite = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in r["params"].values()]).all(0)
    for key in ("train_logits", "test_logits", *(k for k in VIEW_LOGITS if k in r)):
        finite &= torch.isfinite(r[key]).flatten(1).all(1)
    if not bool(finite.all()):
        bad = [models[k] for k in torch.nonzero(~finite).flatten().tolist()]
        raise FlatprivError(
            f"pool training diverged: models {bad} ended with non-finite weights or logits "
            "(nothing of their chunk was saved); a smaller optim.lr usually helps"
        )


def chunk_done(path: Path) -> bool:
    """A chunk counts as trained only if it reads back whole; a truncated one is removed and trained again."""
    if not path.exists():
        return False
    try:
        results.load_array(path)
    except FlatprivError:
        tqdm.write(f"flatpriv: {path.name} is unreadable (cut short?); training that chunk again", file=sys.stderr)
        path.unlink()
        return False
    return True


def save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    results.write_file(path, lambda f: np.savez(f, **arrays))


def ray_memory(pool: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Ray task options reserving a chunk's estimated memory (so Ray never runs more chunks on a node than fit),
    or a clear refusal when no live node offers that much (the task would otherwise wait forever)."""
    est = pool.get("memory_estimate_mib")
    if not est:
        return {}
    need = int((pool["chunk_size"] * est["per_model"] + est["per_chunk"]) * 2**20)
    biggest = max((n["Resources"].get("memory", 0) for n in nodes if n.get("Alive")), default=0)
    if biggest and need > biggest:
        raise FlatprivError(
            f"a chunk of {pool['chunk_size']} models needs about {need / 2**30:.2f} GiB, more than "
            f"any Ray node offers ({biggest / 2**30:.2f} GiB): lower --chunk-size or --memory-budget"
        )
    return {"memory": need}


def run_on_ray(
    run_dir: Path, todo: list[tuple[int, int]], args: Any, address: str | None, quiet: bool, pool: dict[str, Any]
) -> None:
    try:
        import ray
    except ImportError as e:
        raise FlatprivError("--backend ray needs Ray: pip install 'flatpriv[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(chunk_arrays).options(**ray_memory(pool, ray.nodes()))
    pending = {remote.remote(*args(start)): c for c, start in todo}
    with progress.bar(desc="pool (ray)", total=len(pending), unit="chunk", quiet=quiet) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            c = pending.pop(ready[0])
            save_chunk(run_dir / "chunks" / f"chunk-{c:04d}.npz", ray.get(ready[0]))
            bar.update()
