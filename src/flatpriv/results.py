"""Run directories: one per run, never overwritten, every file written atomically.

<out>/<command>-<name>-<YYYYmmdd-HHMMSS>-<id>/
    config.json  provenance.json  metrics.jsonl  summary.json  model.pt  arrays/*.npy  plots/*.png
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FlatprivError

RUN_MARKER = "config.json"


def is_run_dir(path: Path) -> bool:
    return (path / RUN_MARKER).is_file()


def new_run_dir(out: str | Path, command: str, name: str) -> Path:
    """Create a fresh run directory under ``out``; refuses to nest inside an existing run directory."""
    out = Path(out)
    if is_run_dir(out):
        raise FlatprivError(f"--out {out} is an existing run directory; give a parent directory for new runs")
    if out.exists() and not out.is_dir():
        raise FlatprivError(f"--out {out} exists and is not a directory")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    path = out / f"{command}-{safe}-{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    (path / "arrays").mkdir()
    return path


def _atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    """``json`` fallback for numpy scalars and arrays, so callers can write what the estimators return."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_plain) + "\n"))


def dumps(obj: Any) -> str:
    """One-line JSON (what ``--json`` prints), numpy values included."""
    return json.dumps(obj, default=_plain)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    _atomic_write(path, lambda f: f.write("".join(json.dumps(r, default=_plain) + "\n" for r in records)))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise FlatprivError(f"missing {path}") from e
    except json.JSONDecodeError as e:
        raise FlatprivError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from e


def save_array(run_dir: Path, name: str, arr: np.ndarray) -> None:
    _atomic_write(run_dir / "arrays" / f"{name}.npy", lambda f: np.save(f, arr), mode="wb")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(device: str) -> dict[str, Any]:
    import torch

    from . import __version__

    versions = {
        "python": platform.python_version(),
        "flatpriv": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for dist in ("dp-accounting", "scikit-learn", "mnist1d"):  # metadata only: importing them costs seconds
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "command_line": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": _git_sha(),
        "versions": versions,
        "platform": platform.platform(),
        "host": platform.node(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
