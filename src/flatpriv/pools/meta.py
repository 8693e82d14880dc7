"""pool.json: what a pool is (models, masks, chunks, the config digest) and how long its processes have run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import results
from ..errors import FlatprivError

POOL_FILE = "pool.json"


@dataclass
class PoolMeta:
    """The pool's description, written before the first chunk and rewritten after each finished chunk.

    ``elapsed``: wall seconds spent training chunks in earlier processes, so a resumed pool's summary counts the
    time of every process that worked on it, not only the last one's.
    """

    models: int
    keep_fraction: float
    keep_mode: str
    chunk_size: int
    save_weights: bool
    config_sha256: str
    memory_estimate_mib: dict[str, float] = field(default_factory=dict)
    memory_budget_gib: float | None = None
    model_seeds: str = ""
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: Path) -> None:
        results.write_json(run_dir / POOL_FILE, self.to_dict())

    @classmethod
    def load(cls, run_dir: Path) -> PoolMeta:
        d = results.read_json(run_dir / POOL_FILE)
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if not isinstance(d, dict) or not required <= set(d):
            raise FlatprivError(f"{run_dir / POOL_FILE}: not a pool description (needs {', '.join(sorted(required))})")
        return cls(**{k: v for k, v in d.items() if k in names})
