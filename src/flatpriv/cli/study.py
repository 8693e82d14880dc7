"""``flatpriv study``: run one of the papers' reproductions and print its claims table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import FlatprivError


def add_parser(sub: Any, common: Any) -> None:
    from ..studies import STUDIES

    p = sub.add_parser(
        "study",
        help="reproduce a paper's claims with one command (pools, analyses, report with verdicts)",
        description="Run a study of science.md §6: its pools and analyses go into one new run directory "
        "(study-NAME-...), which ends with report.md, a self-contained report.html, plots/ and results.json; "
        "the report opens with the claims table (claim, rule, value, 95 %% CI, count, verdict). "
        f"Studies: {', '.join(STUDIES)}.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the study (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies, one line each")
    p.add_argument("--quick", action="store_true", help="small pools and few epochs: every stage and plot in minutes")
    p.add_argument("--out", default="runs", metavar="DIR", help="parent directory for the study's run directory")
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted study, skipping its finished stages")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the pools train (default cpu)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="run pools' chunks locally or on Ray")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one of the study's settings (the report lists them), e.g. --set models=64",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress: neither the bar over the stages (shown on a terminal) nor the stage lines (in a log)",
    )
    common(p)
    p.set_defaults(func=cmd_study)


def cmd_study(a: argparse.Namespace) -> dict[str, Any]:
    from ..studies import list_studies, run_study

    if a.list:
        studies = list_studies()
        if not a.json:
            for name, text in studies:
                print(f"{name:18s} {text}")
        return {"studies": dict(studies)}
    if not a.name and not a.resume:
        raise FlatprivError("give a study name or --list (see `flatpriv study --help`)")
    quiet = a.quiet or a.json
    # On a terminal the study's bar (stderr) shows the stage; a log (stdout or stderr not a terminal: CI, `> log`,
    # `2> err`) gets one line per stage instead, so it still says what ran when.
    lines = not quiet and not (sys.stdout.isatty() and sys.stderr.isatty())

    def progress(stage: str, cached: bool) -> None:
        if lines:
            print(f"stage {stage}: {'finished earlier, skipped' if cached else 'running'}", flush=True)

    summary = run_study(
        a.name,
        quick=a.quick,
        out=a.out,
        resume=a.resume,
        device=a.device,
        backend=a.backend,
        overrides=a.overrides,
        quiet=quiet,
        on_stage=progress,
    )
    if not a.json:
        if not summary.get("finished", True):
            print(
                f"interrupted during stage {summary['interrupted_at_stage']}; finished stages are kept: continue "
                f"with `flatpriv study --resume {summary['run_dir']}`"
            )
        else:
            print(f"run directory: {summary['run_dir']}")
            print((Path(summary["run_dir"]) / "claims.txt").read_text(), end="")
            print(f"report: {summary['report']} (stages: {summary['stage_seconds']:.0f} s)")
    return summary
