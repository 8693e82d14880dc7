"""Studies: one module per reproduction of science.md §6 (claims, settings, stages) and the shared runner.

What lives here: each study module (``sam_privacy``, …) declares a :class:`~.runner.StudySpec`: its claims
(science.md §6.1 wording and verdict rule, :mod:`.claims`), its default and ``--quick`` settings and its stages
(pools and analyses, the same library calls the CLI makes); :mod:`.runner` executes the stages into one run
directory, skipping finished ones on resume, and :mod:`.report` writes report.md and a self-contained report.html.

Imports: anything below it (``analyses``, ``pools``, ``train``, ``step``, ``privacy``, ``data``, ``models``,
``results``, ``plots``, the array-only estimators, ``config_io``); never ``cli``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .. import results
from ..errors import FlatprivError
from .runner import Context, StudySpec, run

STUDIES = {
    "sam-privacy": "sam_privacy",
    "curvature-memorization": "curvature_memorization",
    "noisy-sgd-bias": "noisy_sgd_bias",
    "vasso-label-noise": "vasso_label_noise",
    "dp-sat": "dp_sat",
}


def get_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise FlatprivError(f"no study named '{name}' (see `flatpriv study --list`: {', '.join(STUDIES)})")
    return importlib.import_module(f".{STUDIES[name]}", __name__).STUDY


def list_studies() -> list[tuple[str, str]]:
    return [(name, get_study(name).description) for name in STUDIES]


def _saved(run_dir: Path, name: str | None) -> tuple[StudySpec, dict[str, Any]]:
    """The study and the saved config of the study directory ``run_dir``; refuses anything else in one line."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FlatprivError(f"--resume {run_dir}: not a study run directory (no config.json)")
    cfg = results.read_json(cfg_path)
    if not isinstance(cfg, dict) or cfg.get("kind") != "study" or not isinstance(cfg.get("settings"), dict):
        raise FlatprivError(f"--resume {run_dir}: not a study run directory (config.json has no study settings)")
    if name is not None and cfg.get("study") != name:
        raise FlatprivError(f"--resume {run_dir}: that directory holds study '{cfg.get('study')}', not '{name}'")
    spec = get_study(str(cfg.get("study")))
    unknown = set(cfg["settings"]) ^ set(spec.defaults)
    if unknown:
        raise FlatprivError(
            f"--resume {run_dir}: its settings do not match study '{spec.name}' "
            f"({', '.join(sorted(unknown))}): damaged or from another version"
        )
    return spec, cfg


def run_study(
    name: str | None = None,
    quick: bool = False,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    device: str = "cpu",
    backend: str = "local",
    overrides: list[str] | None = None,
    quiet: bool = True,
    on_stage: Any = None,
) -> dict[str, Any]:
    """Run study ``name`` into a new directory under ``out``, or finish the study in ``resume``; returns its
    summary (claim verdicts, report path). Everything that can be refused is refused before a directory exists."""
    overrides = list(overrides or [])
    if resume is not None:
        if overrides:
            raise FlatprivError("--resume continues a study with its saved settings; --set cannot change them")
        run_dir = Path(resume)
        spec, cfg = _saved(run_dir, name)
        quick, settings = bool(cfg.get("quick")), cfg["settings"]
        device, backend = cfg.get("device", device), cfg.get("backend", backend)
    else:
        if name is None:
            raise FlatprivError("give a study name (see `flatpriv study --list`)")
        if device not in ("cpu", "cuda") or backend not in ("local", "ray"):
            raise FlatprivError(f"device {device!r} / backend {backend!r}: must be cpu|cuda and local|ray")
        spec = get_study(name)
        settings = spec.settings(quick, overrides)
        spec.stages(settings)  # refuses inconsistent settings before a directory exists
        run_dir = results.new_run_dir(out, "study", spec.name)
        results.write_json(
            run_dir / "config.json",
            {
                "kind": "study",
                "study": spec.name,
                "quick": quick,
                "settings": settings,
                "device": device,
                "backend": backend,
            },
        )
        results.write_json(run_dir / "provenance.json", results.provenance(device))
    ctx = Context(run_dir, settings, device=device, backend=backend, quiet=quiet)
    return run(spec, ctx, quick, on_stage)


__all__ = ["STUDIES", "Context", "StudySpec", "get_study", "list_studies", "run_study"]
