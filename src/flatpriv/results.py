"""Run directories: one per run, never overwritten, every file written atomically.

<out>/<command>-<name>-<YYYYmmdd-HHMMSS>-<id>/
    config.json  provenance.json  metrics.jsonl  summary.json  model.pt  arrays/*.npy  plots/*.png
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import platform
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import FlatprivError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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
    _CREATED.append(path)
    try:
        (path / "arrays").mkdir()
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


_CREATED: list[Path] = []  # run directories this process made, newest last (see discard_on_os_error)
_WORTH_KEEPING = {"train": "checkpoint.pt", "pool": "chunks/chunk-*.npz", "study": "stages/*.json"}


def _resume_hint(run_dir: Path) -> str | None:
    """How to continue ``run_dir`` when it holds finished work (an epoch checkpoint, a chunk, a study stage)."""
    return next((f"flatpriv {c} --resume {run_dir}" for c, g in _WORTH_KEEPING.items() if any(run_dir.glob(g))), None)


def os_error_text(e: OSError) -> str:
    """One line for an OSError: the file it concerns, then the OS's words (\"No space left on device\")."""
    where = f"{e.filename}: " if e.filename else ""
    return " ".join(f"{where}{e.strerror or e}".split())


@contextlib.contextmanager
def discard_on_os_error() -> Iterator[None]:
    """On an OSError inside (a full disk, an unwritable or vanished ``--out``), remove each run directory made since
    entry that holds nothing worth keeping, so no half-written directory is left behind; one that holds an epoch
    checkpoint or a finished chunk stays, and the error (one line) says how to resume it once the disk has room."""
    start = len(_CREATED)
    try:
        yield
    except OSError as e:
        hints = []
        for run_dir in _CREATED[start:]:
            hint = _resume_hint(run_dir)
            if hint is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                hints.append(hint)
        if hints:
            raise FlatprivError(f"{os_error_text(e)}; the finished work is kept: continue with `{hints[-1]}`") from e
        raise
    finally:
        del _CREATED[start:]


LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an OS lock on ``run_dir`` (``flock`` on its .lock file) for the length of a run: two processes
    resuming one run would append to one metrics.jsonl and replace each other's checkpoint. The OS drops the lock
    when the process ends, however it ends, so a killed run never leaves a stale lock behind."""
    if fcntl is None:  # pragma: no cover - no flock (Windows): runs are not protected from a second writer
        yield
        return
    with open(run_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FlatprivError(f"{run_dir} is in use by {holder}: one run directory has one writer") from e
        f.seek(0)
        f.truncate()
        f.write(f"flatpriv process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with _naming(path), open(tmp, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:  # a full disk (or Ctrl-C) mid-write: no partial temporary file holds on to the space
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A write error names no file (ENOSPC comes from write(2)): raise it naming the file being written."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def write_file(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a binary file atomically through ``write(f)`` (``torch.save(obj, f)``, ``np.savez(f, ...)``). Going
    through a Python file object matters: on a full disk ``torch.save(obj, path)`` raises its own RuntimeError,
    while writing to ``f`` raises the OSError (ENOSPC) that the command line reports in one line."""
    _atomic_write(path, write, mode="wb")


def _plain(obj: Any) -> Any:
    """Numpy scalars and arrays as Python values, and NaN/±inf as null: ``json`` would write the bare words
    ``NaN``/``Infinity``, which strict parsers reject. A value that is undefined (the memorization of an example
    never left out, a correlation over constant scores) is null in every file flatpriv writes."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return _plain(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _dumps(obj: Any, indent: int | None = None) -> str:
    # allow_nan=False: a non-finite number that escaped _plain is a bug to hear about, not a file to write
    return json.dumps(_plain(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    text = _dumps(obj, indent=2) + "\n"
    _atomic_write(path, lambda f: f.write(text))


def dumps(obj: Any) -> str:
    """One-line JSON (what ``--json`` prints), numpy values included, NaN/±inf as null."""
    return _dumps(obj)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(_dumps(r) + "\n" for r in records)
    _atomic_write(path, lambda f: f.write(text))


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
    line = _dumps(record) + "\n"
    with _naming(path), open(path, "a") as f:
        f.write(line)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """An append-only log, whose last line may be cut short by a kill mid-append: that line is dropped (the
    record it began was never complete); a bad line anywhere else is a corrupt file."""
    if not path.exists():
        return []
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise FlatprivError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise FlatprivError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from e
    if not all(isinstance(r, dict) for r in records):
        raise FlatprivError(f"{path}: every line must be a JSON object")
    return records


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
        # --no-optional-locks: a plain `git status` refreshes and rewrites the index under .git/index.lock, which
        # collides with the user's own git commands in the flatpriv checkout; this one only reads.
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
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
