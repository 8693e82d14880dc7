"""`flatpriv study noisy-sgd-bias`: the real --quick mode end to end, resume that skips finished stages, and the
settings it refuses before a directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_refused_in_one_line, interrupt_pools

from flatpriv.cli import main

TINY = [
    "dln_seeds=3",
    "dln_steps=200",
    "ls_steps=400",
    "ls_chains=8",
    "ls_over_steps=100",
    "batch_sizes=[16, 64]",
    "steps=64",
    "train_samples=1024",
    "models=2",
    "width=8",
    "resamples=20",
]


def _argv(out: Path, *extra: str) -> list[str]:
    return ["study", "noisy-sgd-bias", "--quick", "--out", str(out), *[x for s in TINY for x in ("--set", s)], *extra]


def test_quick_mode_end_to_end(tmp_path, capsys):
    """The real --quick settings: every stage and plot, R5 and R6 with their parts, DP-SGD's ε per B."""
    assert main(["study", "noisy-sgd-bias", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    assert set(summary["claims"]) == {"R5", "R6"}
    results = json.loads((run / "results.json").read_text())
    parts = {c["id"]: [p["label"] for p in c["parts"]] for c in results["claims"]}
    assert parts == {"R5": ["GD > SGD", "SGD > Noisy-SGD σ=0.5"], "R6": ["Noisy-SGD", "DP-SGD"]}
    for claim in results["claims"]:
        for part in claim["parts"]:
            assert part["count"] >= 4 and part["ci"][0] <= part["value"] + 1e-12 <= part["ci"][1] + 1e-12
    stages = results["stages"]
    eps = [stages[f"dpsgd-B{b}"]["summary"]["epsilon"] for b in (16, 64, 256, 1024)]
    assert all(e > 0 for e in eps) and len(set(eps)) == 4  # each B spends its own ε
    assert all(stages[f"noisy_sgd-B{b}"]["summary"]["epsilon"] is None for b in (16, 64, 256, 1024))
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert plots == {
        "dln_curves_alpha0.1.png",
        "dln_curves_alpha0.01.png",
        "dln_final.png",
        "dln_alpha_inf.png",
        "ls_covariance.png",
        "ls_bound.png",
        "batch_accuracy.png",
    }
    md = (run / "report.md").read_text()
    assert md.index("## Claims") < md.index("## R5") < md.index("## Least squares") < md.index("## R6")
    assert all(f"plots/{name}" in md for name in plots)


def test_an_interrupted_study_resumes_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    trained = interrupt_pools(monkeypatch, 2)
    assert main(_argv(tmp_path)) == 130
    run = next(tmp_path.glob("study-noisy-sgd-bias-*"))
    finished = sorted(p.stem for p in (run / "stages").glob("*.json"))
    assert finished == ["dln", "least-squares", "noisy_sgd-B16"]
    trained.clear()
    capsys.readouterr()
    assert main(["study", "--resume", str(run), "--json"]) == 0
    assert trained == ["noisy_sgd-B64", "dpsgd-B16", "dpsgd-B64"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["claims"].keys() == {"R5", "R6"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("batch_sizes=[12]", "partial epoch"),
        ("dln_sigma=0.3", "judged α and σ"),
        ("train_samples=10", "at least 16"),
        ("models=1", "at least 2"),
    ],
)
def test_refused_settings_are_one_line_and_leave_no_directory(tmp_path, capsys, setting, message):
    assert_refused_in_one_line(
        ["study", "noisy-sgd-bias", "--out", str(tmp_path), "--set", setting], message, capsys, tmp_path
    )
