"""`flatpriv study curvature-memorization`: the fits and the mislabel AUROC against planted values, the real
--quick mode end to end, resume, and refusals before a directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused_in_one_line, interrupt_pools
from scipy.stats import norm

from flatpriv.cli import main
from flatpriv.studies.curvature_memorization_plots import binned, fit_saturation, saturation
from flatpriv.studies.curvature_memorization_report import _auroc

S = {"resamples": 300, "seed": 0}


@pytest.mark.parametrize("params", [(2.0, -1.5, 0.3), (0.5, 1.0, 0.05), (1.0, 0.0, 1.0)])
def test_the_saturation_fit_recovers_planted_parameters(params):
    eps = np.array([0.5, 1.0, 2.0, 5.0, 10.0, 50.0])
    fit = fit_saturation(eps, saturation(eps, *params))
    assert fit is not None
    assert np.allclose(
        saturation(np.geomspace(0.1, 100, 50), *fit),
        saturation(np.geomspace(0.1, 100, 50), *params),
        rtol=1e-4,
        atol=1e-6,
    )


def test_the_saturation_fit_refuses_too_few_points():
    assert fit_saturation([1.0, 2.0], [0.1, 0.2]) is None


def test_binned_means_and_linear_fit_on_a_planted_line():
    rng = np.random.default_rng(0)
    mem = rng.uniform(-0.2, 1.0, 20000)
    curv = 0.3 + 2.0 * mem + rng.normal(0, 0.05, mem.size)
    b = binned(mem, curv)
    assert b["count"].sum() == (mem >= 0).sum()  # negative memorization is left out, every other point counted
    assert float(b["slope"]) == pytest.approx(2.0, abs=0.02) and float(b["intercept"]) == pytest.approx(0.3, abs=0.02)
    k = 10  # bin [0.2, 0.22): its mean is the mean of exactly its points
    sel = (mem >= 0.2) & (mem < 0.22)
    assert b["mean"][k] == pytest.approx(curv[sel].mean())


def test_mislabel_auroc_on_planted_flips():
    """Flipped points' scores shifted by d standard deviations: AUROC = Φ(d/√2), within the bootstrap CI."""
    rng = np.random.default_rng(1)
    n, d = 4000, 1.5
    flipped = np.zeros(n, dtype=int)
    flipped[rng.permutation(n)[:400]] = 1
    score = rng.normal(0, 1, n) + d * flipped
    value, lo, hi, count = _auroc(flipped, score, S)
    assert lo <= norm.cdf(d / np.sqrt(2)) <= hi and count == n
    assert 0.82 < value < 0.88
    score[:10] = np.nan  # unscored points are dropped, not counted as misses
    assert _auroc(flipped, score, S)[3] == n - 10


TINY = [
    "samples=600",
    "models=4",
    "epochs=2",
    "width=8",
    "curvature_every=1",
    "probes=2",
    "noise_models=4",
    "dp_samples=800",
    "dp_models=4",
    "dp_epochs=1",
    "dp_width=8",
    "dp_batch_size=128",
    "dp_curvature_examples=50",
    "resamples=20",
]


def _argv(out: Path, *extra: str) -> list[str]:
    return [
        "study",
        "curvature-memorization",
        "--quick",
        "--out",
        str(out),
        *[x for s in TINY for x in ("--set", s)],
        *extra,
    ]


def test_quick_mode_end_to_end(tmp_path, capsys):
    assert main(["study", "curvature-memorization", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    assert set(summary["claims"]) == {"R3a", "R3b", "R4a", "R4b"}
    results = json.loads((run / "results.json").read_text())
    parts = {c["id"]: len(c["parts"]) for c in results["claims"]}
    assert parts == {"R3a": 1, "R3b": 1, "R4a": 4, "R4b": 1}  # R4a: the rank correlation and the bound at each ε
    for claim in results["claims"]:
        for part in claim["parts"]:
            assert part["count"] > 0 and part["ci"][0] <= part["value"] + 1e-12 <= part["ci"][1] + 1e-12
    bound = [p for c in results["claims"] if c["id"] == "R4a" for p in c["parts"][1:]]
    assert [p["threshold"] for p in bound] == pytest.approx([1 - np.exp(-e) for e in (1.0, 5.0, 20.0)])
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert plots == {
        "binned.png",
        "scatter.png",
        "roc_noise0.01.png",
        "roc_noise0.05.png",
        "roc_noise0.1.png",
        "epsilon.png",
    }
    md = (run / "report.md").read_text()
    assert md.index("## Claims") < md.index("## R3a") < md.index("## R3b") < md.index("## R4") < md.index("## Cost")
    assert "ratio of" in md and all(f"plots/{name}" in md for name in plots)


def test_an_interrupted_study_resumes_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    trained = interrupt_pools(monkeypatch, 3)
    assert main(_argv(tmp_path)) == 130
    run = next(tmp_path.glob("study-curvature-memorization-*"))
    finished = sorted(p.stem for p in (run / "stages").glob("*.json"))
    assert "pool" in finished and "noise0.05-pool" not in finished
    trained.clear()
    capsys.readouterr()
    assert main(["study", "--resume", str(run), "--json"]) == 0
    assert "pool" not in trained and trained[0] == "noise0.05-pool"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["claims"].keys() == {"R3a", "R3b", "R4a", "R4b"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("noise_levels=[0.05]", "0.1 among them"),
        ("dp_epsilons=[1.0, 2.0]", "at least 3"),
        ("curvature_every=100", "between 1 and epochs"),
        ("dataset='imagenet'", "not a data set"),
        ("models=2", "at least 4"),
    ],
)
def test_refused_settings_are_one_line_and_leave_no_directory(tmp_path, capsys, setting, message):
    assert_refused_in_one_line(
        ["study", "curvature-memorization", "--out", str(tmp_path), "--set", setting], message, capsys, tmp_path
    )


def test_another_data_set_runs_every_part_on_it(tmp_path, capsys):
    """--set dataset=digits: the pools, the noisy runs and the DP pools all train on scikit-learn's digits."""
    argv = _argv(tmp_path, "--set", "dataset='digits'", "--set", "dp_batch_size=64", "--json")
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stages = json.loads((Path(summary["run_dir"]) / "results.json").read_text())["stages"]
    assert {rec["summary"]["dataset"] for rec in stages.values() if "summary" in rec} == {"digits"}
