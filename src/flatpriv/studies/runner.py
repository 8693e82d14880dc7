"""The study runner: settings, stages cached in the study's run directory (resume), then the report.

A study (:class:`StudySpec`) declares its claims, its default and ``--quick`` settings with the reason for each,
its stages, and the module whose ``analyse(ctx)`` (imported when the report is written) turns the finished
stages into verdicts and report sections. The runner executes each stage into
``<out>/study-<name>-<time>-<id>/`` and writes ``stages/<stage>.json`` when it finishes; a resumed study
(``--resume DIR``) skips every stage whose file exists. Then it writes results.json,
plots/*.png, report.md, a self-contained report.html and summary.json.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import progress, results
from ..config_io import parse_override
from ..errors import FlatprivError
from .claims import Claim
from .report import Section, claims_table, claims_text, render_html, render_md

STAGES_DIR = "stages"


@dataclass(frozen=True)
class Stage:
    """A named piece of work; ``run(ctx)`` returns a JSON-able record (paths, summaries) kept in stages/."""

    name: str
    run: Callable[[Context], dict[str, Any]]
    kind: str = "pool"  # "pool" | "analysis": shown in the cost table


@dataclass
class Context:
    """What a stage sees: the study's directory, its settings, where to compute, and the finished stages."""

    run_dir: Path
    settings: dict[str, Any]
    device: str = "cpu"
    backend: str = "local"
    quiet: bool = True
    done: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def plots(self) -> Path:
        path = self.run_dir / "plots"
        path.mkdir(exist_ok=True)
        return path


@dataclass(frozen=True)
class StudySpec:
    name: str
    title: str
    description: str  # one line for `flatpriv study --list`
    claims: list[Claim]
    defaults: dict[str, Any]
    quick: dict[str, Any]  # overrides of defaults in --quick mode
    reasons: dict[str, str]  # why each default is what it is (shown in the report's settings table)
    stages: Callable[[dict[str, Any]], list[Stage]]
    # the module (relative to flatpriv.studies) whose ``analyse(ctx) -> (verdicts, sections)`` turns the finished
    # stages into the report; imported only when the report is written (analyses pull in scipy, attacks, plots)
    analysis: str

    def settings(self, quick: bool, overrides: list[str]) -> dict[str, Any]:
        s = dict(self.defaults, **(self.quick if quick else {}))
        for text in overrides:
            path, value = parse_override(text)
            key = ".".join(path)
            if key not in self.defaults:
                raise FlatprivError(
                    f"--set {key}: study '{self.name}' has no such setting (it takes: "
                    f"{', '.join(sorted(self.defaults))})"
                )
            expected = type(self.defaults[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise FlatprivError(
                    f"--set {key}={value!r}: expected a {expected.__name__} like {self.defaults[key]!r}"
                )
            s[key] = value
        return s


def _record(ctx: Context, stage: Stage) -> dict[str, Any]:
    path = ctx.run_dir / STAGES_DIR / f"{stage.name}.json"
    if path.exists():
        return results.read_json(path)
    t0 = time.perf_counter()
    out = stage.run(ctx)
    rec = {"stage": stage.name, "kind": stage.kind, "wall_seconds": round(time.perf_counter() - t0, 2), **out}
    results.write_json(path, rec)
    return rec


def run(spec: StudySpec, ctx: Context, quick: bool, on_stage: Callable[[str, bool], None] | None = None) -> dict:
    """Run (or finish) every stage into ``ctx.run_dir``, then analyse and write the report; returns summary.json."""
    t0 = time.perf_counter()
    (ctx.run_dir / STAGES_DIR).mkdir(exist_ok=True)
    stages = spec.stages(ctx.settings)
    cached = [(ctx.run_dir / STAGES_DIR / f"{stage.name}.json").exists() for stage in stages]
    # one bar over the stages (the report counts as one more), a resumed study's finished ones counted as done;
    # the train and pool bars of the running stage show under it
    with progress.bar(
        desc=f"study {spec.name}", total=len(stages) + 1, initial=sum(cached), unit="stage", quiet=ctx.quiet
    ) as bar:
        for stage, was_cached in zip(stages, cached):
            if on_stage:
                on_stage(stage.name, was_cached)
            bar.set_postfix_str(stage.name)
            try:
                ctx.done[stage.name] = _record(ctx, stage)
            except KeyboardInterrupt:  # finished stages are kept; `flatpriv study --resume` does the rest
                return {
                    "kind": "study",
                    "study": spec.name,
                    "finished": False,
                    "interrupted_at_stage": stage.name,
                    "run_dir": str(ctx.run_dir),
                }
            bar.update(0 if was_cached else 1)  # a cached stage is in the bar's initial count
        bar.set_postfix_str("analysis and report")
        summary = _report(spec, ctx, quick, t0)
        bar.update()
    return summary


def _report(spec: StudySpec, ctx: Context, quick: bool, t0: float) -> dict[str, Any]:
    """The finished stages' analysis: results.json, report.md, report.html, claims.txt and summary.json."""
    analyse = importlib.import_module(spec.analysis, __package__).analyse
    verdicts, sections = analyse(ctx)
    cost = Section("Cost").text(
        f"Wall time of each stage on this machine ({ctx.device}); a stage finished in an "
        "earlier process of a resumed study keeps the time it took then."
    )
    cost.table(
        ["stage", "kind", "seconds"],
        [[name, rec.get("kind", ""), rec["wall_seconds"]] for name, rec in ctx.done.items()],
    )
    total = sum(r["wall_seconds"] for r in ctx.done.values())
    cost.text(
        f"Stages in total: {total:.0f} s; this process (including analysis and report): "
        f"{time.perf_counter() - t0:.0f} s."
    )
    settings = Section("Settings").text(
        f"Mode: {'quick' if quick else 'default'}. Defaults were fixed before the first run; every setting is listed "
        f"so the study can be rerun with `flatpriv study {spec.name}"
        f"{' --quick' if quick else ''} --set KEY=VALUE`."
    )
    settings.table(
        ["setting", "value", "why"], [[k, str(v), spec.reasons.get(k, "")] for k, v in sorted(ctx.settings.items())]
    )
    all_sections = [claims_table(verdicts), settings, *sections, cost]
    intro = spec.description
    (ctx.run_dir / "report.md").write_text(render_md(spec.title, intro, all_sections))
    (ctx.run_dir / "report.html").write_text(render_html(spec.title, intro, all_sections, ctx.plots))
    (ctx.run_dir / "claims.txt").write_text(claims_text(verdicts))
    claims = [r.to_dict() for r in verdicts]
    results.write_json(
        ctx.run_dir / "results.json",
        {
            "study": spec.name,
            "mode": "quick" if quick else "default",
            "settings": ctx.settings,
            "claims": claims,
            "stages": ctx.done,
        },
    )
    summary = {
        "kind": "study",
        "study": spec.name,
        "mode": "quick" if quick else "default",
        "claims": {c["id"]: c["verdict"] for c in claims},
        "stage_seconds": round(total, 1),
        "report": str(ctx.run_dir / "report.html"),
        "run_dir": str(ctx.run_dir),
        "finished": True,
    }
    results.write_json(ctx.run_dir / "summary.json", summary)
    return summary
