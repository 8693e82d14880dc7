"""Pools: K models of one architecture, model k trained on its own random subset S_k, as one vmapped computation.

The K parameter trees are stacked on a leading model axis (``torch.func.stack_module_state``). One step is the
algorithm's gradient pipeline ``vmap``-ed over that axis, with per-model batches gathered from per-model keep
masks and per-model norms for SAM's ε; the descent is one stock ``torch.optim`` optimizer over the stacked
tensors, which is element-wise and therefore exactly K separate optimizers. Model k uses seed ``seed + k`` for
its initialisation and batch order, so it equals ``flatpriv train`` with that seed on subset S_k.

Outputs (feldman.py, lira.py and curvature read them): arrays/keep.npy [K, N] bool, arrays/train_logits.npy
[K, N, C] and arrays/test_logits.npy [K, M, C] (float16), labels, models.jsonl (one summary per model).
Models are trained in chunks; each finished chunk is saved, so a killed pool resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from . import results
from .config import Config, config_from_dict, config_to_dict
from .data import Dataset, load_data
from .errors import FlatprivError
from .models import build_model
from .pool_dp import SUPPORTED as DP_SUPPORTED
from .pool_dp import train_dp_models
from .private import setup_privacy
from .step import get_algorithm, make_optimizer
from .train import resolve_device

POOL_FILE = "pool.json"


def make_keep(n_models: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """keep[k, i] = 1[i ∈ S_k]: every model gets exactly round(fraction · N) examples, drawn independently."""
    if not 0 < fraction < 1:
        raise FlatprivError(f"--keep {fraction}: the kept fraction must be in (0, 1)")
    m = round(fraction * n)
    if m < 1 or m >= n:
        raise FlatprivError(f"--keep {fraction} keeps {m} of {n} examples: every model needs some in and some out")
    rng = np.random.default_rng([seed, 0x9001])
    keep = np.zeros((n_models, n), dtype=bool)
    for k in range(n_models):
        keep[k, rng.permutation(n)[:m]] = True
    return keep


@torch.no_grad()
def _logits(base: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    f = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None))
    return torch.cat([f(params, x[i:i + batch]) for i in range(0, len(x), batch)], dim=1)


def train_models(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                 quiet: bool = True) -> dict[str, Any]:
    """Train len(seeds) models at once, model k on the training positions where ``keep[k]`` is set; DP rows go
    through :func:`flatpriv.pool_dp.train_dp_models` (per-model Poisson batches, noise and ledgers)."""
    alg = get_algorithm(cfg.algorithm)
    _check_poolable(cfg.algorithm)
    extra: dict[str, Any] = {}
    if alg.private:
        r = train_dp_models(cfg, data, keep, seeds, quiet)
        params, base = r.pop("params"), r.pop("base")
        extra = r
    else:
        params, base = _train_plain(cfg, data, keep, seeds, quiet)
    device = data.x_train.device
    train_logits = _logits(base, params, data.x_train, cfg.train.eval_batch_size)
    test_logits = _logits(base, params, data.x_test, cfg.train.eval_batch_size)
    keep_t = torch.as_tensor(keep, device=device)
    correct = (train_logits.argmax(-1) == data.y_train).float()
    return {"params": params, "train_logits": train_logits, "test_logits": test_logits,
            "train_accuracy": ((correct * keep_t).sum(1) / keep_t.sum(1)).cpu().numpy(),
            "test_accuracy": (test_logits.argmax(-1) == data.y_test).float().mean(1).cpu().numpy(), **extra}


def _check_poolable(algorithm: str) -> None:
    alg = get_algorithm(algorithm)
    if alg.noisy or (alg.private and algorithm not in DP_SUPPORTED):
        raise FlatprivError(f"pools of {algorithm} are not available yet: pools train sgd, sam, vasso, asam, "
                            f"sharpreg and {', '.join(DP_SUPPORTED)}")


def _train_plain(cfg: Config, data: Dataset, keep: np.ndarray, seeds: list[int],
                 quiet: bool) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    alg = get_algorithm(cfg.algorithm)
    device = data.x_train.device
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(build_model(cfg.model, data.input_shape, data.num_classes).to(device))
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    pipeline = alg.build(cfg, base, None)
    subsets = torch.as_tensor(np.stack([np.flatnonzero(row) for row in keep]), device=device)
    m, bs = subsets.shape[1], cfg.train.batch_size
    steps_per_epoch = math.ceil(m / bs)
    optimizer, scheduler = make_optimizer(cfg, list(params.values()), steps_per_epoch * cfg.train.epochs)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    state = pipeline.init(params)
    for _ in tqdm(range(cfg.train.epochs), desc=f"pool chunk ({len(seeds)} models)", unit="epoch",
                  disable=quiet or None, leave=False):
        perms = torch.stack([torch.randperm(m, generator=g) for g in gens]).to(device)
        order = torch.gather(subsets, 1, perms)  # model k's epoch: its own subset in its own order
        for i in range(0, m, bs):
            idx = order[:, i:i + bs]
            # state leaves that are not tensors yet (VaSSO's d before its first step) are not mapped over
            state_dims = tree_map(lambda v: 0 if isinstance(v, torch.Tensor) else None, state)
            grad = vmap(pipeline.grad, in_dims=(0, state_dims, 0, 0))
            g, state, _ = grad(params, state, data.x_train[idx], data.y_train[idx])
            for name, p in params.items():
                p.grad = g[name]
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return {k: v.detach() for k, v in params.items()}, base


def _run_chunks(run_dir: Path, cfg: Config, pool: dict[str, Any], quiet: bool) -> dict[str, Any]:
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, device)
    keep = np.load(run_dir / "arrays" / "keep.npy")
    canary_path = run_dir / "arrays" / "canaries.npy"
    if canary_path.exists():  # the audit's canaries: training examples given a wrong label in every model
        canaries = torch.as_tensor(np.load(canary_path), device=device)
        data.y_train[canaries] = torch.as_tensor(np.load(run_dir / "arrays" / "canary_labels.npy"), device=device)
    k_total, chunk = pool["models"], pool["chunk_size"]
    (run_dir / "chunks").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    starts = list(range(0, k_total, chunk))
    for c, start in enumerate(tqdm(starts, desc="pool", unit="chunk", disable=quiet or None)):
        path = run_dir / "chunks" / f"chunk-{c:04d}.npz"
        if path.exists():
            continue  # finished before an interruption
        rows = slice(start, min(start + chunk, k_total))
        seeds = [cfg.seed + k for k in range(rows.start, rows.stop)]
        r = train_models(cfg, data, keep[rows], seeds, quiet=True)
        arrays = {"train_logits": r["train_logits"].cpu().numpy().astype(np.float16),
                  "test_logits": r["test_logits"].cpu().numpy().astype(np.float16),
                  "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"],
                  **{k: np.asarray(r[k]) for k in ("epsilon", "noise_multiplier", "sample_rate") if k in r}}
        if pool.get("save_weights"):
            arrays.update({f"param/{k}": v.cpu().numpy() for k, v in r["params"].items()})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        if pool.get("stop_after_chunks") and c + 1 >= pool["stop_after_chunks"] and c + 1 < len(starts):
            return {"run_dir": str(run_dir), "interrupted_after_chunk": c + 1}
    parts = [np.load(run_dir / "chunks" / f"chunk-{c:04d}.npz") for c in range(len(starts))]
    for key in ("train_logits", "test_logits"):
        results.save_array(run_dir, key, np.concatenate([p[key] for p in parts]))
    results.save_array(run_dir, "train_labels", data.y_train.cpu().numpy())
    results.save_array(run_dir, "test_labels", data.y_test.cpu().numpy())
    for name, arr in data.meta.items():
        results.save_array(run_dir, name, np.asarray(arr))
    train_acc = np.concatenate([p["train_accuracy"] for p in parts])
    test_acc = np.concatenate([p["test_accuracy"] for p in parts])
    (run_dir / "models.jsonl").write_text("".join(
        results.json.dumps({"model": k, "seed": cfg.seed + k, "train_accuracy": float(a), "test_accuracy": float(b),
                            "kept": int(keep[k].sum())}) + "\n" for k, (a, b) in enumerate(zip(train_acc, test_acc))))
    summary = {"kind": "pool", "algorithm": cfg.algorithm, "dataset": cfg.data.name, "model": cfg.model.name,
               "models": k_total, "keep_fraction": pool["keep_fraction"], "examples": int(keep.shape[1]),
               "train_accuracy": float(train_acc.mean()), "test_accuracy": float(test_acc.mean()),
               "test_accuracy_sd": float(test_acc.std(ddof=1)) if k_total > 1 else 0.0,
               **_privacy(cfg, parts),
               "wall_seconds": round(pool.get("elapsed", 0.0) + time.perf_counter() - t0, 3), "run_dir": str(run_dir)}
    results.write_json(run_dir / "summary.json", summary)
    return summary


def _privacy(cfg: Config, parts: list) -> dict[str, Any]:
    if "epsilon" not in parts[0].files:
        return {"epsilon": None, "delta": None, "accountant": None}
    from .privacy.accounting import NEIGHBOURING, accountant_description

    return {"epsilon": max(float(p["epsilon"]) for p in parts), "delta": cfg.privacy.delta,
            "accountant": accountant_description(cfg.privacy.accountant), "neighbouring": NEIGHBOURING,
            "epsilon_note": "every model has the same (σ, q, steps) ledger, so this ε holds for each model",
            "noise_multiplier": float(parts[0]["noise_multiplier"]), "sample_rate": float(parts[0]["sample_rate"])}


def make_canaries(labels: np.ndarray, n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training positions and a wrong label for each (uniform over the other classes): mislabelled canaries,
    the examples a membership audit finds easiest to expose (Jagielski et al. 2020)."""
    if not 0 <= n <= len(labels):
        raise FlatprivError(f"--canaries {n}: must be between 0 and the {len(labels)} training examples")
    rng = np.random.default_rng([seed, 0xCA7A])
    pos = np.sort(rng.choice(len(labels), size=n, replace=False))
    return pos, (labels[pos] + rng.integers(1, num_classes, size=n)) % num_classes


def train_pool(cfg: Config, n_models: int, keep_fraction: float = 0.5, chunk_size: int = 64, name: str = "custom",
               out: str | Path = "runs", quiet: bool = False, save_weights: bool = False,
               stop_after_chunks: int | None = None, canaries: int = 0) -> dict[str, Any]:
    """Train a pool of ``n_models`` into a new run directory; returns its summary (mean accuracies over models).

    ``canaries``: relabel that many training examples (saved as arrays/canaries.npy) for the privacy audit.
    """
    if n_models < 2:
        raise FlatprivError(f"--models {n_models}: a pool needs at least 2 models")
    if chunk_size < 1:
        raise FlatprivError(f"--chunk-size {chunk_size}: must be at least 1")
    _check_poolable(cfg.algorithm)
    data = load_data(cfg.data, resolve_device(cfg.train.device))
    keep = make_keep(n_models, len(data.y_train), keep_fraction, cfg.seed)
    if get_algorithm(cfg.algorithm).private:  # refuse a configuration that breaks DP before writing anything
        setup_privacy(cfg, True, 1, False, int(keep[0].sum()), data.x_train.device)
    run_dir = results.new_run_dir(out, "pool", name)
    results.write_json(run_dir / "config.json", config_to_dict(cfg))
    results.write_json(run_dir / "provenance.json", results.provenance(str(data.x_train.device)))
    pool = {"models": n_models, "keep_fraction": keep_fraction, "keep_mode": "exact", "chunk_size": chunk_size,
            "model_seeds": f"seed + k for k in 0..{n_models - 1}", "save_weights": save_weights}
    results.write_json(run_dir / POOL_FILE, pool)
    results.save_array(run_dir, "keep", keep)
    if canaries:
        pos, wrong = make_canaries(data.y_train.cpu().numpy(), canaries, data.num_classes, cfg.seed)
        results.save_array(run_dir, "canaries", pos)
        results.save_array(run_dir, "canary_labels", wrong)
    return _run_chunks(run_dir, cfg, dict(pool, stop_after_chunks=stop_after_chunks), quiet)


def resume_pool(run_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Finish a pool whose process was killed: chunks already saved are kept, the rest are trained."""
    run_dir = Path(run_dir)
    if not (run_dir / POOL_FILE).is_file():
        raise FlatprivError(f"--resume {run_dir}: not a pool run directory (no {POOL_FILE})")
    if (run_dir / "summary.json").exists():
        raise FlatprivError(f"--resume {run_dir}: this pool already finished (summary.json exists)")
    cfg = config_from_dict(results.read_json(run_dir / "config.json"))
    return _run_chunks(run_dir, cfg, results.read_json(run_dir / POOL_FILE), quiet)
