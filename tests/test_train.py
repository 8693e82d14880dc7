"""End-to-end training through the Python API and the CLI: promised files, resume, and bad input."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, interrupt_after

from flatpriv.cli.main import main
from flatpriv.config_io import resolve
from flatpriv.train import resume, train

train_module = importlib.import_module("flatpriv.train")  # the module itself (flatpriv.train is also a function)


def _final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "model.pt", weights_only=True)


@pytest.mark.parametrize("algorithm", ["sgd", "vasso"])
def test_resume_gives_the_same_weights(tmp_path, algorithm, monkeypatch):
    cfg, _ = resolve(overrides=TINY + [f"algorithm={algorithm}", "train.epochs=3"])
    full = train(cfg, out=tmp_path / "a", quiet=True)
    interrupt_after(monkeypatch, train_module, "_save_checkpoint", 1)
    part = train(cfg, out=tmp_path / "b", quiet=True)
    assert part["interrupted_after_epoch"] == 1
    assert not (Path(part["run_dir"]) / "summary.json").exists()
    done = resume(part["run_dir"], quiet=True)
    a, b = _final_weights(full["run_dir"]), _final_weights(done["run_dir"])
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert done["test_accuracy"] == full["test_accuracy"]
    epochs = [json.loads(line)["epoch"] for line in open(Path(done["run_dir"]) / "metrics.jsonl")]
    assert epochs == [1, 2, 3]


def test_resume_refuses_finished_or_foreign_dirs(tmp_path):
    from flatpriv.errors import FlatprivError

    cfg, _ = resolve(overrides=TINY)
    s = train(cfg, out=tmp_path, quiet=True)
    with pytest.raises(FlatprivError, match="already finished"):
        resume(s["run_dir"])
    with pytest.raises(FlatprivError, match="not a run directory"):
        resume(tmp_path)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "data",
    [
        ["data.name=digits"],
        ["data.name=mnist1d", "data.num_samples=400"],
        ["data.name=synthetic-longtail", "data.typical_per_class=20", "data.label_noise=0.1"],
    ],
)
def test_cli_train_writes_the_promised_files(tmp_path, capsys, data):
    args = [x for o in TINY + data for x in ("--set", o)]
    code, out, err = _cli(capsys, "train", *args, "--out", str(tmp_path), "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    assert run.parent == tmp_path and run.name.startswith("train-default-")
    for key in (
        "algorithm",
        "test_accuracy",
        "train_accuracy",
        "epsilon",
        "delta",
        "accountant",
        "steps",
        "wall_seconds",
    ):
        assert key in summary
    assert summary["epsilon"] is None and 0 <= summary["test_accuracy"] <= 1
    assert json.loads((run / "summary.json").read_text()) == summary
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["name"] == data[0].split("=")[1]
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["versions"]["torch"] == torch.__version__ and prov["command_line"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all("test_accuracy" in m for m in lines)
    # the steps' own time (what a bare training loop times) is part of the run's, and grows epoch by epoch
    steps_time = [m["train_seconds"] for m in lines]
    assert 0 < steps_time[0] < steps_time[1] <= lines[1]["wall_seconds"]
    assert summary["train_seconds"] == round(steps_time[1], 3) <= summary["wall_seconds"]
    weights = torch.load(run / "model.pt", weights_only=True)
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
    labels = np.load(run / "arrays" / "train_labels.npy")
    logits = np.load(run / "arrays" / "train_logits.npy")
    assert logits.shape == (len(labels), 10) and np.isfinite(logits).all()
    assert np.load(run / "arrays" / "test_logits.npy").shape[0] == len(np.load(run / "arrays" / "test_labels.npy"))
    acc = (logits.argmax(1) == labels).mean()
    assert acc == pytest.approx(summary["train_accuracy"], abs=1e-6)
    assert not (run / "checkpoint.pt").exists()


def test_cli_listings(capsys):
    code, out, _ = _cli(capsys, "presets", "--json")
    assert code == 0 and "default" in json.loads(out.splitlines()[-1])["presets"]
    code, out, _ = _cli(capsys, "algorithms")
    assert code == 0 and "vasso" in out


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["--set", "train.epochs=many"], "train.epochs"),
        (["--set", "optim.lr=-0.1"], "optim.lr"),
        (["--preset", "no-such-preset"], "no preset named"),
        (["--set", "data.name=mnist", "--set", "data.root=/nonexistent/dir"], "/nonexistent/dir"),
        (["--set", "algorithm=adamw"], "algorithm"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, fragment):
    out = tmp_path / "runs"
    code, stdout, err = _cli(capsys, "train", *argv, "--out", str(out))
    assert code == 2
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert not out.exists()


def test_existing_run_dir_as_out_is_refused_untouched(tmp_path, capsys):
    cfg, _ = resolve(overrides=TINY)
    run = Path(train(cfg, out=tmp_path, quiet=True)["run_dir"])
    before = _snapshot(run)
    code, _, err = _cli(capsys, "train", *[x for o in TINY for x in ("--set", o)], "--out", str(run))
    assert code == 2 and "existing run directory" in err and err.count("\n") == 1
    assert _snapshot(run) == before


def test_python_m_flatpriv_exit_code_and_single_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flatpriv", "train", "--set", "model.width=0", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "model.width" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "flatpriv", "train", "--bogus"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
