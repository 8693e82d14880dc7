"""Running a pool: keep masks and canaries, chunks of models on the local machine or spread over a Ray cluster,
each finished chunk saved at once (so a killed pool resumes), then the pool's arrays and summary.

``--backend ray`` sends every unfinished chunk to a Ray worker as one task; a worker regenerates the (offline,
seeded) data itself and returns the chunk's arrays, which the driver saves. The chunk function is the same for
both backends, so the results are the same models (to float rounding when workers use other thread counts).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import results
from ..checkpoint import config_digest
from ..config import Config, config_from_dict, config_to_dict
from ..data import augment as aug
from ..data import load_data
from ..errors import FlatprivError
from ..models import resolve_device
from ..privacy.privatizer import privacy_summary, setup_privacy
from ..privacy.sampling import noise_source
from ..progress import bar
from ..step import get_algorithm
from .chunks import VIEW_LOGITS, chunk_arrays, chunk_done, ray_memory, run_on_ray, save_chunk
from .masks import make_keep
from .memory import chunk_size as choose_chunk
from .memory import pool_memory
from .meta import POOL_FILE, PoolMeta
from .plain import check_plain

__all__ = ["chunk_arrays", "make_canaries", "ray_memory", "resume_pool", "train_pool"]


def _run_chunks(
    run_dir: Path,
    cfg: Config,
    pool: PoolMeta,
    quiet: bool,
    backend: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    keep = results.load_array(run_dir / "arrays" / "keep.npy")
    canary_path = run_dir / "arrays" / "canaries.npy"
    canaries = results.load_array(canary_path) if canary_path.exists() else None
    canary_labels = results.load_array(run_dir / "arrays" / "canary_labels.npy") if canaries is not None else None
    if canaries is not None:
        data.y_train[torch.as_tensor(canaries, device=device)] = torch.as_tensor(canary_labels, device=device)
    k_total, chunk = pool.models, pool.chunk_size
    (run_dir / "chunks").mkdir(exist_ok=True)
    t0, elapsed_before = time.perf_counter(), pool.elapsed
    starts = list(range(0, k_total, chunk))
    todo = [(c, start) for c, start in enumerate(starts) if not chunk_done(run_dir / "chunks" / f"chunk-{c:04d}.npz")]

    def args(start: int) -> tuple:
        rows = slice(start, min(start + chunk, k_total))
        return (
            config_to_dict(cfg),
            keep[rows],
            [cfg.seed + k for k in range(rows.start, rows.stop)],
            canaries,
            canary_labels,
            pool.save_weights,
        )

    if backend == "ray":
        run_on_ray(run_dir, todo, args, ray_address, quiet, pool.to_dict())
    else:
        try:
            done_before = len(starts) - len(todo)  # a resumed pool's saved chunks count, but not in the rate
            desc = f"pool {cfg.algorithm} ({k_total} models)"
            for c, start in bar(todo, desc=desc, total=len(starts), initial=done_before, unit="chunk", quiet=quiet):
                t_chunk = time.perf_counter()
                arrays = chunk_arrays(*args(start), quiet=quiet)
                pool.elapsed += time.perf_counter() - t_chunk  # recorded before the chunk: a later resume counts it
                pool.save(run_dir)
                save_chunk(run_dir / "chunks" / f"chunk-{c:04d}.npz", arrays)
        except KeyboardInterrupt:  # every saved chunk is kept: `flatpriv pool --resume` trains the rest
            done = sum(chunk_done(run_dir / "chunks" / f"chunk-{c:04d}.npz") for c in range(len(starts)))
            return {"run_dir": str(run_dir), "finished": False, "interrupted_after_chunk": done}
    parts = [results.load_array(run_dir / "chunks" / f"chunk-{c:04d}.npz") for c in range(len(starts))]
    for key in ("train_logits", "test_logits", *(k for k in VIEW_LOGITS if k in parts[0])):
        results.save_array(run_dir, key, np.concatenate([p[key] for p in parts]))
    if "query_views" in parts[0]:  # (dy, dx, flip) of each view the *_logits_views arrays hold
        results.save_array(run_dir, "query_views", parts[0]["query_views"])
    for name, arr in data.arrays(indices=False).items():
        results.save_array(run_dir, name, arr)
    train_acc = np.concatenate([p["train_accuracy"] for p in parts])
    test_acc = np.concatenate([p["test_accuracy"] for p in parts])
    private = {
        key: np.concatenate([np.atleast_1d(p[key]) for p in parts])
        for key in ("epsilon", "noise_multiplier", "sample_rate", "releases")
        if key in parts[0]
    }
    results.write_jsonl(
        run_dir / "models.jsonl",
        [
            {
                "model": k,
                "seed": cfg.seed + k,
                "train_accuracy": float(a),
                "test_accuracy": float(b),
                "kept": int(keep[k].sum()),
                **{key: int(v[k]) if key == "releases" else float(v[k]) for key, v in private.items()},
            }
            for k, (a, b) in enumerate(zip(train_acc, test_acc))
        ],
    )
    summary = {
        "kind": "pool",
        "algorithm": cfg.algorithm,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "models": k_total,
        "keep_fraction": pool.keep_fraction,
        "keep_mode": pool.keep_mode,
        "examples": int(keep.shape[1]),
        "train_accuracy": float(train_acc.mean()),
        "test_accuracy": float(test_acc.mean()),
        "test_accuracy_sd": float(test_acc.std(ddof=1)) if k_total > 1 else 0.0,
        **_privacy(cfg, private),
        "wall_seconds": round(elapsed_before + time.perf_counter() - t0, 3),  # earlier processes + this one
        "finished": True,
        "run_dir": str(run_dir),
    }
    results.write_json(run_dir / "summary.json", summary)
    return summary


def _privacy(cfg: Config, private: dict[str, np.ndarray]) -> dict[str, Any]:
    kind = get_algorithm(cfg.algorithm).kind
    source = {"noise_source": noise_source(cfg.privacy.secure_rng, cfg.privacy.noise_seed)} if kind != "plain" else {}
    if kind != "dp":
        return privacy_summary(kind, cfg.privacy.noise_multiplier, **source)
    eps, sigma, q = private["epsilon"], private["noise_multiplier"], private["sample_rate"]
    same = bool((eps == eps[0]).all() and (sigma == sigma[0]).all() and (q == q[0]).all())
    return privacy_summary(
        "dp",
        float(sigma[0]) if same else None,
        float(eps.max()),
        cfg.privacy.delta,
        cfg.privacy.accountant,
        epsilon_note="every model has the same (σ, q, steps) ledger, so this ε holds for each model"
        if same
        else "the largest ε over the models (Bernoulli masks: each model has its own subset size, q_k, σ_k "
        "and ε_k, listed in models.jsonl); it holds for each model",
        sample_rate=float(q[0]) if same else None,
        **source,
    )


def make_canaries(labels: np.ndarray, n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training positions and a wrong label for each (uniform over the other classes): mislabelled canaries,
    the examples a membership audit finds easiest to expose (Jagielski et al. 2020)."""
    if not 0 <= n <= len(labels):
        raise FlatprivError(f"--canaries {n}: must be between 0 and the {len(labels)} training examples")
    rng = np.random.default_rng([seed, 0xCA7A])
    pos = np.sort(rng.choice(len(labels), size=n, replace=False))
    return pos, (labels[pos] + rng.integers(1, num_classes, size=n)) % num_classes


def train_pool(
    cfg: Config,
    n_models: int,
    keep_fraction: float = 0.5,
    chunk_size: int | None = None,
    name: str = "custom",
    out: str | Path = "runs",
    quiet: bool = False,
    save_weights: bool = False,
    canaries: int = 0,
    backend: str = "local",
    ray_address: str | None = None,
    keep_mode: str = "exact",
    memory_budget: float | None = None,
) -> dict[str, Any]:
    """Train a pool of ``n_models`` into a new run directory; returns its summary (mean accuracies over models).

    ``chunk_size`` models are trained at once; by default as many as fit ``memory_budget`` GiB (default: half the
    device's free memory) by :mod:`flatpriv.pools.memory`'s estimate, at most 64.
    ``canaries``: relabel that many training examples (saved as arrays/canaries.npy) for the privacy audit.
    """
    if n_models < 2:
        raise FlatprivError(f"--models {n_models}: a pool needs at least 2 models")
    data = load_data(cfg.data, resolve_device(cfg.train.device))
    keep = make_keep(n_models, len(data.y_train), keep_fraction, cfg.seed, keep_mode)
    alg = get_algorithm(cfg.algorithm)
    aug.check(cfg.augment, alg.kind == "dp", data.input_shape)
    if alg.private or alg.noisy:  # refuse what breaks DP (or Noisy-SGD's rules) before writing anything
        for size in {int(keep.sum(1).min()), int(keep.sum(1).max())}:
            setup_privacy(cfg, alg, size, data.x_train.device)
    else:
        check_plain(cfg, keep)
    per_model, per_chunk = pool_memory(
        cfg,
        data.input_shape,
        data.num_classes,
        len(data.y_train),
        len(data.y_test),
        int(keep.sum(1).max()),
        data.x_train.device,
    )
    chunk_size = choose_chunk(chunk_size, memory_budget, per_model, per_chunk, data.x_train.device, n_models)
    if canaries:  # a bad count is refused before the directory exists
        pos, wrong = make_canaries(data.y_train.cpu().numpy(), canaries, data.num_classes, cfg.seed)
    pool = PoolMeta(
        models=n_models,
        keep_fraction=keep_fraction,
        keep_mode=keep_mode,
        chunk_size=chunk_size,
        save_weights=save_weights,
        config_sha256=config_digest(config_to_dict(cfg)),
        memory_estimate_mib={"per_model": round(per_model / 2**20, 2), "per_chunk": round(per_chunk / 2**20, 2)},
        memory_budget_gib=memory_budget,
        model_seeds=f"seed + k for k in 0..{n_models - 1}",
    )
    with results.discard_on_os_error():  # a full disk before the first chunk leaves no directory behind
        run_dir = results.new_run_dir(out, "pool", name)
        with results.locked(run_dir):
            results.write_json(run_dir / "config.json", config_to_dict(cfg))
            results.write_json(run_dir / "provenance.json", results.provenance(str(data.x_train.device)))
            pool.save(run_dir)
            results.save_array(run_dir, "keep", keep)
            if canaries:
                results.save_array(run_dir, "canaries", pos)
                results.save_array(run_dir, "canary_labels", wrong)
            return _run_chunks(run_dir, cfg, pool, quiet, backend, ray_address)


def resume_pool(
    run_dir: str | Path, quiet: bool = False, backend: str = "local", ray_address: str | None = None
) -> dict[str, Any]:
    """Finish a pool whose process was killed: chunks already saved are kept, the rest are trained."""
    run_dir = Path(run_dir)
    if not (run_dir / POOL_FILE).is_file():
        raise FlatprivError(f"--resume {run_dir}: not a pool run directory (no {POOL_FILE})")
    with results.locked(run_dir):
        if (run_dir / "summary.json").exists():
            raise FlatprivError(f"--resume {run_dir}: this pool already finished (summary.json exists)")
        cfg_dict, pool = results.read_json(run_dir / "config.json"), PoolMeta.load(run_dir)
        if pool.config_sha256 != config_digest(cfg_dict):  # chunks trained so far used another config
            raise FlatprivError(
                f"--resume {run_dir}: config.json was changed since the pool started (or the pool predates "
                "config digests); a pool resumes with the config it started with"
            )
        return _run_chunks(run_dir, config_from_dict(cfg_dict), pool, quiet, backend, ray_address)
