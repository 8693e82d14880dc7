"""Progress a person sees: bars (with an ETA) on a terminal and nothing of them elsewhere, fit's and train's
per-epoch log lines, and the summary every long command prints at its end."""

from __future__ import annotations

import importlib
import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, interrupt_after
from torch import nn

import flatpriv
from flatpriv.analyses.attack import ATTACKS
from flatpriv.cli.main import main
from flatpriv.errors import FlatprivError
from flatpriv.studies.runner import Context, Stage, StudySpec, run

train_module = importlib.import_module("flatpriv.train")
ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")  # tqdm's [elapsed<remaining
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): train loss [\d.]+, train accuracy [\d.]+(.*), ([\d.]+) s$")


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console's stderr does."""

    def isatty(self) -> bool:
        return True


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """stderr as a terminal, from now on in this test (pytest's capture replaces sys.stderr again after fixtures
    are set up, so this is called in the test itself): what tqdm writes there is kept."""
    fake = Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    return fake


def _sets(extra: list[str] = ()) -> list[str]:
    return [x for o in TINY + list(extra) for x in ("--set", o)]


def _json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A single run and a 5-model pool with weights (the attacks' minimum), made once for the analyses below."""
    out = tmp_path_factory.mktemp("finished")
    runs = {}
    for kind, argv in (
        ("run", ["train", *_sets(["train.epochs=1"])]),
        ("pool", ["pool", *_sets(["train.epochs=1"]), "--models", "5", "--save-weights"]),
    ):
        stream = io.StringIO()
        real, sys.stdout = sys.stdout, stream
        try:
            assert main([*argv, "--out", str(out), "--json"]) == 0
        finally:
            sys.stdout = real
        runs[kind] = json.loads(stream.getvalue().strip().splitlines()[-1])["run_dir"]
    return runs


def test_train_shows_a_bar_with_an_eta_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    assert main(["train", *_sets(), "--out", str(tmp_path / "tty")]) == 0
    bar = terminal.getvalue()
    assert "train sgd:" in bar and "2/2" in bar and "100%" in bar and ETA.search(bar), bar
    assert "test_acc=" in bar and "epoch/s" in bar
    printed = capsys.readouterr().out
    assert printed.startswith("run directory: ") and "sgd on digits/mlp: test accuracy" in printed
    # --quiet and --json: not a character of a bar, even on a terminal
    for flag in ("--quiet", "--json"):
        terminal.seek(0), terminal.truncate()
        assert main(["train", *_sets(), "--out", str(tmp_path / "q"), flag]) == 0
        assert terminal.getvalue() == "", flag
    capsys.readouterr()


def test_nothing_of_a_bar_when_stderr_is_not_a_terminal(tmp_path, capsys, finished):
    """pytest's capture is what CI and `2> file` are: no terminal, so no bar from any command."""
    for argv in (
        ["train", *_sets(["train.epochs=1"]), "--out", str(tmp_path)],
        ["pool", *_sets(["train.epochs=1"]), "--models", "2", "--out", str(tmp_path)],
        ["attack", finished["pool"], "--bootstrap", "0", "--out", str(tmp_path)],
        ["sharpness", finished["run"], "--subset", "64", "--iters", "2", "--probes", "2"],
    ):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert err == "" and "%|" not in out and "it/s" not in out, argv[0]


def test_a_pool_shows_its_chunks_and_the_running_chunk_under_them(tmp_path, capsys, monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    argv = ["pool", *_sets(["train.epochs=2"]), "--models", "4", "--chunk-size", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    bar = terminal.getvalue()
    assert "pool sgd (4 models):" in bar and "2/2 [" in bar and ETA.search(bar)  # the outer bar: chunks
    assert "pool chunk (2 models):" in bar  # the nested one: the running chunk's epochs
    # the nested bar is blanked when its chunk ends (leave=None), never left as a finished line; the outer one stays
    assert re.search(r"\r +\x1b\[A", bar) and not re.search(r"pool chunk \(2 models\): 100%[^\r\x1b]*\n", bar)
    last = bar.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("pool sgd (4 models): 100%"), last
    s = json.loads((Path(capsys.readouterr().out.split("run directory: ")[1].split()[0]) / "summary.json").read_text())
    assert s["models"] == 4


@pytest.mark.parametrize(
    "command, desc",
    [
        (["memorization", "{pool}"], "memorization:"),
        (["attack", "{pool}", "--bootstrap", "0", "--references", "1,2"], "attack:"),
        (["curvature", "{pool}", "--probes", "1"], "curvature (5 models):"),
        (["sharpness", "{run}", "--subset", "64", "--iters", "3", "--tol", "0", "--probes", "2"], "sharpness:"),
    ],
)
def test_every_analysis_shows_a_bar_on_a_terminal(command, desc, tmp_path, capsys, finished, monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    argv = [a.format(**finished) for a in command]
    assert main([*argv, *([] if argv[0] == "sharpness" else ["--out", str(tmp_path)])]) == 0
    bar = terminal.getvalue()
    assert desc in bar and "100%" in bar, bar
    if argv[0] == "attack":  # every (pool, attack) scored and measured, and each reference count
        assert f"{2 * len(ATTACKS) + 2}/{2 * len(ATTACKS) + 2}" in bar and ETA.search(bar)
    if argv[0] == "sharpness":  # 3 power iterations (tol 0: never converged early), then 2 probes, 1 batch each
        assert "5/5" in bar and "lambda_max" in bar and "trace" in bar
    terminal.seek(0), terminal.truncate()
    assert main([*argv, *([] if argv[0] == "sharpness" else ["--out", str(tmp_path)]), "--quiet"]) == 0
    assert terminal.getvalue() == ""
    capsys.readouterr()


def analyse(ctx: Context) -> tuple[list, list]:
    """The fake study's analysis (StudySpec.analysis names this module): no claims, no sections."""
    return [], []


def _study(calls: list[str]) -> StudySpec:
    def stage(name: str) -> Stage:
        return Stage(name, lambda ctx: calls.append(name) or {}, "analysis")

    return StudySpec(
        name="fake",
        title="a fake study",
        description="two stages and no claims",
        claims=[],
        defaults={},
        quick={},
        reasons={},
        stages=lambda settings: [stage("first"), stage("second")],
        analysis=__name__,
    )


def test_a_study_shows_one_bar_over_its_stages_and_counts_finished_ones(tmp_path, monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    calls: list[str] = []
    run(_study(calls), Context(tmp_path, {}, quiet=False), quick=True)
    bar = terminal.getvalue()
    assert calls == ["first", "second"]
    assert "study fake:" in bar and "first" in bar and "second" in bar and "3/3" in bar  # 2 stages + the report
    terminal.seek(0), terminal.truncate()
    (tmp_path / "stages" / "second.json").unlink()  # as if interrupted during the second stage: resume
    run(_study(calls), Context(tmp_path, {}, quiet=False), quick=True)
    assert calls == ["first", "second", "second"]
    assert terminal.getvalue().startswith("\rstudy fake:  33%")  # the finished stage is counted from the start


def test_study_lines_go_to_logs_and_the_summary_names_the_run_directory(tmp_path, capsys, monkeypatch):
    """`flatpriv study`: a line per stage when the output is a log, none on a terminal (the bar says it there)."""
    import flatpriv.studies as studies

    (tmp_path / "claims.txt").write_text("R1  holds\n")

    def fake_run_study(name, on_stage, **_):
        on_stage("pool-sgd", True)
        on_stage("pool-sam", False)
        summary = {"finished": True, "run_dir": str(tmp_path), "report": str(tmp_path / "report.html")}
        return {**summary, "stage_seconds": 12.0}

    monkeypatch.setattr(studies, "run_study", fake_run_study)
    assert main(["study", "fake"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "stage pool-sgd: finished earlier, skipped",
        "stage pool-sam: running",
        f"run directory: {tmp_path}",
        "R1  holds",
        f"report: {tmp_path / 'report.html'} (stages: 12 s)",
    ]
    for stream in ("stdout", "stderr"):  # a terminal: stdout and stderr both a console
        monkeypatch.setattr(sys, stream, Terminal())
    assert main(["study", "fake"]) == 0
    assert not sys.stdout.getvalue().startswith("stage ") and "run directory: " in sys.stdout.getvalue()


def _data(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 5, generator=g) + y[:, None], y


def _fit(tmp_path: Path, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    settings = dict(algorithm="dpsgd", epochs=3, batch_size=32, lr=0.5, noise_multiplier=1.0, delta=1e-3)
    with pytest.warns(UserWarning, match="noise_seed"):
        return flatpriv.fit(model, _data(), _data(60, 1), out=tmp_path, noise_seed=1, **{**settings, **kw})


def _lines(text: str) -> list[re.Match]:
    return [m for m in map(EPOCH_LINE.match, text.splitlines()) if m]


def test_fit_log_every_prints_one_line_per_n_epochs_with_the_runs_numbers(tmp_path, capsys):
    summary = _fit(tmp_path / "a", log_every=1)
    out = capsys.readouterr().out
    lines = _lines(out)
    assert len(lines) == len(out.splitlines()) == 3  # nothing else on stdout
    assert [(int(m[1]), int(m[2])) for m in lines] == [(1, 3), (2, 3), (3, 3)]
    metrics = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    for m, record in zip(lines, metrics):
        assert f"test accuracy {record['test_accuracy']:.4f}" in m[3]
        assert f"epsilon {record['epsilon']:.4f}" in m[3]
    assert f"epsilon {summary['epsilon']:.4f}" in lines[-1][3]  # the last line's ε is the summary's
    assert float(lines[-1][4]) == pytest.approx(summary["wall_seconds"], abs=0.06)
    # every 2 epochs, and the last; the default (None) and 0 print nothing
    _fit(tmp_path / "b", log_every=2)
    assert [int(m[1]) for m in _lines(capsys.readouterr().out)] == [2, 3]
    _fit(tmp_path / "c")
    _fit(tmp_path / "c", log_every=0)
    assert capsys.readouterr().out == ""


def test_a_resumed_fit_logs_the_epochs_it_trains(tmp_path, capsys, monkeypatch):
    interrupt_after(monkeypatch, train_module, "_save_checkpoint", 2)  # Ctrl-C once epoch 2's checkpoint is saved
    part = _fit(tmp_path, log_every=1)
    assert part["interrupted_after_epoch"] == 2 and [int(m[1]) for m in _lines(capsys.readouterr().out)] == [1]
    done = _fit(tmp_path, log_every=1, resume=part["run_dir"])
    assert done["finished"] and [(int(m[1]), int(m[2])) for m in _lines(capsys.readouterr().out)] == [(3, 3)]


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_a_bad_log_every_is_refused_in_one_line_before_anything_is_written(bad, tmp_path):
    with pytest.raises(FlatprivError, match="log_every") as e:
        flatpriv.fit(nn.Linear(5, 3), _data(), algorithm="sgd", out=tmp_path, log_every=bad)
    assert "\n" not in str(e.value) and "whole number" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_train_log_every_on_the_command_line(tmp_path, capsys):
    assert main(["train", *_sets(["train.epochs=3"]), "--log-every", "2", "--out", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])  # --json's object is still the last line, with nothing added to it
    assert [(int(m[1]), int(m[2])) for m in map(EPOCH_LINE.match, out[:-1])] == [(2, 3), (3, 3)]
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out[1] and "epsilon" not in out[1]
    assert set(summary) == set(json.loads((Path(summary["run_dir"]) / "summary.json").read_text()))
    assert main(["train", *_sets(), "--log-every", "-1", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--log-every = -1" in err and not (tmp_path / "bad").exists()


def test_pool_and_attack_end_with_their_summary(tmp_path, capsys, finished):
    dp = ["algorithm=dpsgd", "privacy.noise_multiplier=1", "privacy.delta=1e-4", "train.epochs=1"]
    assert main(["pool", *_sets(dp), "--models", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    run_dir = Path(out[0].removeprefix("run directory: "))
    s = json.loads((run_dir / "summary.json").read_text())
    assert out[1] == (
        f"pool of 2 dpsgd models on digits/mlp: mean test accuracy {s['test_accuracy']:.4f} "
        f"(sd {s['test_accuracy_sd']:.4f}), mean train accuracy on kept examples {s['train_accuracy']:.4f}, "
        f"{s['wall_seconds']:.1f} s"
    )
    assert out[2].startswith(f"privacy: epsilon = {s['epsilon']:.4f} at delta = 0.0001")

    assert main(["attack", finished["pool"], "--bootstrap", "0", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    s = json.loads((Path(out[0].split()[2]) / "summary.json").read_text())
    rows = {line.split()[1]: line.split() for line in out[2 : 2 + len(ATTACKS)]}
    assert set(rows) == set(ATTACKS)
    for r in s["table"]:  # AUC and TPR at 1 % FPR of each attack, as summary.json has them
        assert rows[r["attack"]][2] == f"{r['auc']:.3f}" and rows[r["attack"]][5] == f"{r['tpr_at_1%fpr']:.4f}"
