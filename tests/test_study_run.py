"""`flatpriv study`: the quick mode end to end, resume that skips finished stages, a self-contained report, and
one-line refusals of bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import interrupt_pools

from flatpriv.cli import main

TINY = [
    "datasets=['mnist1d']",
    "models=6",
    "epochs=2",
    "large_rho_epochs=2",
    "rhos=[0.05]",
    "width=16",
    "mnist1d_samples=1000",
    "early_stop=[0.5]",
    "dp_epsilons=[1.0]",
    "dp_models=6",
    "dp_samples=1500",
    "dp_epochs=1",
    "dp_batch_size=128",
    "resamples=50",
]


def _argv(out: Path, *extra: str) -> list[str]:
    return ["study", "sam-privacy", "--quick", "--out", str(out), *[x for s in TINY for x in ("--set", s)], *extra]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.images.append(value)
            elif name in ("href", "src") and value and not value.startswith("data:"):
                self.urls.append(value)


def test_quick_mode_end_to_end(tmp_path, capsys):
    """The real --quick settings: every stage, every plot, the report and the claims table on stdout."""
    assert main(["study", "sam-privacy", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    assert set(summary["claims"]) == {"R1a", "R1b", "R1c", "R2a", "R2b", "R2c", "R2d", "R2e"}
    assert all(v in ("reproduced", "not reproduced", "inconclusive") for v in summary["claims"].values())
    results = json.loads((run / "results.json").read_text())
    for claim in results["claims"]:
        assert claim["rule"] and claim["parts"]
        for part in claim["parts"]:
            assert part["count"] > 0 and part["ci"][0] <= part["value"] + 1e-12 <= part["ci"][1] + 2e-12
    plots = {p.name for p in (run / "plots").glob("*.png")}
    for name in (
        "accuracy_vs_tpr.png",
        "buckets_mnist1d.png",
        "mem_hist_mnist1d.png",
        "roc_mnist1d.png",
        "tpr_by_mem_mnist1d.png",
        "rho_sweep_mnist1d.png",
        "rare_synthetic-longtail.png",
    ):
        assert name in plots
    md = (run / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Settings") < md.index("## Cost")
    for name in plots:  # every plot is in the report
        assert f"plots/{name}" in md


def test_report_html_is_self_contained(tmp_path, capsys):
    assert main(_argv(tmp_path, "--json")) == 0
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    page = _Page()
    page.feed((run / "report.html").read_text())
    assert len(page.images) == len(list((run / "plots").glob("*.png"))) > 5
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.urls == [] and not re.search(r"https?://", (run / "report.html").read_text())


def test_an_interrupted_study_resumes_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    trained = interrupt_pools(monkeypatch, 3)
    assert main(_argv(tmp_path)) == 130  # interrupted during the third pool
    run = next(tmp_path.glob("study-sam-privacy-*"))
    finished = sorted(p.stem for p in (run / "stages").glob("*.json"))
    assert len(finished) == 2
    trained.clear()
    capsys.readouterr()
    assert main(["study", "--resume", str(run), "--json"]) == 0
    assert not set(trained) & set(finished) and len(trained) == 5  # 7 pools, the 2 finished are skipped
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"] == str(run)
    assert (run / "report.html").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["study", "no-such-study"], "no study named"),
        (["study", "sam-privacy", "--set", "nonsense=1"], "has no such setting"),
        (["study", "sam-privacy", "--set", "models=many"], "expected a int"),
        (["study", "sam-privacy", "--set", "rho=0.3"], "must be one of rhos"),
        (["study"], "give a study name"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_resume_refuses_another_study_and_a_damaged_directory(tmp_path, capsys):
    other = tmp_path / "pool-x"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"algorithm": "sgd"}))
    damaged = tmp_path / "study-sam-privacy-x"
    damaged.mkdir()
    (damaged / "config.json").write_text("{not json")
    wrong = tmp_path / "study-other"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"kind": "study", "study": "no-such-study", "settings": {}}))
    for run, message in (
        (other, "not a study run directory"),
        (damaged, "not valid JSON"),
        (tmp_path / "missing", "not a study run directory"),
        (wrong, "no study named"),
    ):
        assert main(["study", "--resume", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["study", "sam-privacy", "--resume", str(wrong)]) == 2
    assert "holds study 'no-such-study'" in capsys.readouterr().err


def test_list_names_every_study(capsys):
    assert main(["study", "--list"]) == 0
    assert capsys.readouterr().out.startswith("sam-privacy")


BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (make test-browser installs it)")
def test_report_renders_in_headless_chromium(tmp_path, capsys):
    assert main(_argv(tmp_path, "--json")) == 0
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (run / "report.html").as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    from PIL import Image

    img = Image.open(shot).convert("L")
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page
