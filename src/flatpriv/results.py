"""Run directories: one per run, never overwritten, every file written atomically.

<out>/<command>-<name>-<YYYYmmdd-HHMMSS>-<id>/
    config.json  provenance.json  metrics.jsonl  summary.json  model.pt  arrays/*.npy  plots/*.png
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import secrets
import subprocess
import sys
import time
import zipfile
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
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise FlatprivError(f"missing {path}") from e
    except UnicodeDecodeError as e:
        raise FlatprivError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise FlatprivError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from e


def save_array(run_dir: Path, name: str, arr: np.ndarray) -> None:
    _atomic_write(run_dir / "arrays" / f"{name}.npy", lambda f: np.save(f, arr), mode="wb")


def load_array(path: Path) -> Any:
    """``np.load`` without pickle (an object array could run code), a one-line error for a missing or corrupt file.

    An ``.npz`` comes back as a plain dict with every member read, so a truncated archive fails here, not later.
    """
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            with z:
                return {k: z[k] for k in z.files}
        return z
    except FileNotFoundError as e:
        raise FlatprivError(f"missing {path}") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FlatprivError(f"{path}: missing or corrupted ({first})") from e


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_tensors(path: Path, device: Any = "cpu") -> Any:
    """``torch.load`` a file from a run directory with ``weights_only=True``: tensors and plain containers only.

    A run directory may come from someone else, and a full unpickle runs whatever code the file names, so
    anything else (a pickled object, a truncated or foreign file) is refused with one line and never executed.
    """
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as e:
        raise FlatprivError(f"missing {path}") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FlatprivError(f"{path}: refused, not a plain tensor file or corrupt ({first})") from e


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
