"""A single run's epoch checkpoint: written atomically, read without unpickling, and tied to the run's config.

The checkpoint holds tensors and plain containers only (generator states are byte tensors, the ledger a dict),
so it loads with ``torch.load(weights_only=True)`` and a planted pickle payload is refused, never run. It also
holds the config the run started with: config.json is a plain file anyone can edit, and a resume that trusted
an edit would report a wrong ε or step count, so a resume whose config.json changed is refused, naming the keys.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from . import results
from .errors import FlatprivError

CHECKPOINT = "checkpoint.pt"


def config_digest(cfg_dict: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys), the same for equal configs in any key order."""
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode()).hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config dicts (added or removed keys included)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))


def save(run_dir: Path, content: dict[str, Any], cfg_dict: dict[str, Any]) -> None:
    """Write ``content`` plus the config and its digest to a temporary file, then rename it into place."""
    full = {**content, "config": cfg_dict, "config_sha256": config_digest(cfg_dict)}
    results.write_file(run_dir / CHECKPOINT, lambda f: torch.save(full, f))  # a full disk keeps the last good one


def load(run_dir: Path, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of ``run_dir`` on the CPU, refused in one line if it is not plain tensors, not a
    checkpoint, or was written under another config than ``cfg_dict`` (what config.json says now)."""
    path = run_dir / CHECKPOINT
    ckpt = results.load_tensors(path, "cpu")
    needed = ("epoch", "model", "optimizer", "generator", "pipeline_state", "elapsed", "config", "config_sha256")
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise FlatprivError(f"{path}: not a flatpriv checkpoint of this version (missing {', '.join(missing)})")
    saved = ckpt["config"]
    if not isinstance(saved, dict) or config_digest(saved) != ckpt["config_sha256"]:
        raise FlatprivError(f"{path}: the config stored in the checkpoint does not match its digest")
    if config_digest(cfg_dict) != ckpt["config_sha256"]:
        keys = changed_keys(saved, cfg_dict)
        raise FlatprivError(
            f"--resume {run_dir}: config.json was changed since the run started ({', '.join(keys)}); a run "
            "resumes with the config it started with (start a new run for another config)"
        )
    return ckpt


def run_state(s: Any, epoch: int, state: Any, gen: torch.Generator, elapsed: float) -> dict[str, Any]:
    """What a checkpoint of the run set up as ``s`` (a ``flatpriv.train.Setup``) holds after ``epoch`` epochs."""
    return {
        "epoch": epoch,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict() if s.scheduler else None,
        "pipeline_state": state,
        "generator": gen.get_state(),
        "elapsed": elapsed,
        "private": s.private.state_dict() if s.private else None,
        "average": s.average.state_dict() if s.average else None,
        "supplied": s.supplied,  # flatpriv.fit: the given model's and data's description, None otherwise
    }


def restore(s: Any, ckpt: dict[str, Any], path: Path) -> tuple[torch.Generator, int, float]:
    """Load :func:`run_state`'s content into the freshly prepared run ``s``; returns (batch-order generator,
    epochs done, seconds elapsed). A checkpoint that does not fit the run is one line naming ``path``."""
    try:
        s.model.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
        if s.scheduler is not None:
            s.scheduler.load_state_dict(ckpt["scheduler"])
        gen = torch.Generator()
        gen.set_state(ckpt["generator"])
        if s.private is not None:
            s.private.load_state_dict(ckpt["private"])
        if s.average is not None:
            s.average.load_state_dict(ckpt["average"])
        return gen, int(ckpt["epoch"]), float(ckpt["elapsed"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise FlatprivError(f"{path}: not a checkpoint of this run ({type(e).__name__}: {first})") from e


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors inside plain containers moved to ``device`` (the pipeline state is saved from, and loaded to, CPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def check_finite(
    losses: list[torch.Tensor], params: dict[str, torch.Tensor], epoch: int, steps_per_epoch: int, run_dir: Path
) -> None:
    """Stop a diverged run before its epoch is recorded, so the directory keeps its last good checkpoint.

    Checked once per epoch (one device sync, not one per step); the first non-finite step is named from the
    losses kept, and a blow-up on the epoch's last step shows in the weights.
    """
    bad = ~torch.isfinite(torch.stack(losses)) if losses else torch.zeros(0, dtype=torch.bool)
    weights_ok = bool(torch.stack([torch.isfinite(p).all() for p in params.values()]).all())
    if not bad.any() and weights_ok:
        return
    j = int(bad.nonzero()[0]) if bad.any() else len(losses) - 1
    what = "loss" if bad.any() else "weights"
    kept = f"its last good checkpoint is epoch {epoch}" if epoch else "no epoch finished, so there is nothing to resume"
    raise FlatprivError(
        f"training diverged: non-finite {what} at epoch {epoch + 1}, step {epoch * steps_per_epoch + j + 1}; "
        f"nothing of that epoch was recorded in {run_dir} ({kept}); a smaller optim.lr usually helps"
    )
