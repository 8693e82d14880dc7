"""`flatpriv study dp-sat`: the real --quick mode end to end (σ, releases and ε of every DP row, the Opacus row),
the 2-D CNN on image files a user supplies, resume that skips finished stages, and the settings it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused_in_one_line, interrupt_pools

from flatpriv.cli import main
from flatpriv.privacy.accounting import epsilon

TINY = ["archs=['mlp']", "epsilons=[4.0]", "seeds=2", "num_samples=1000", "epochs=1", "opacus_seeds=0"]


def _argv(out: Path, *extra: str) -> list[str]:
    return ["study", "dp-sat", "--quick", "--out", str(out), *[x for s in TINY for x in ("--set", s)], *extra]


def _models(stage: dict) -> list[dict]:
    return [json.loads(line) for line in (Path(stage["run_dir"]) / "models.jsonl").read_text().splitlines()]


def test_quick_mode_end_to_end(tmp_path, capsys):
    """Every pool, Opacus and sharpness stage; DP-SAM's larger σ and 2T releases, DP-SAT's ε equal to DP-SGD's."""
    assert main(["study", "dp-sat", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    results = json.loads((run / "results.json").read_text())
    parts = {c["id"]: [p["label"] for p in c["parts"]] for c in results["claims"]}
    assert len(parts["R8a"]) == len(parts["R8b"]) == 2 * (2 + 1)  # models × (ε grid + the time part)
    assert "cnn1d: step time DP-SAM / DP-SGD" in parts["R8b"]
    stages = results["stages"]
    for arch in ("mlp", "cnn1d"):
        for eps in (1, 8):
            su = {a: stages[f"{arch}-{a}-eps{eps}"]["summary"] for a in ("dpsgd", "dpsam", "dpsat", "dpvasso_sat")}
            steps = 2 * round(1 / su["dpsgd"]["sample_rate"])  # 2 epochs of round(1/q) Poisson steps
            assert all(s["epsilon"] <= eps and s["models"] == 3 for s in su.values())
            assert su["dpsam"]["noise_multiplier"] > su["dpsgd"]["noise_multiplier"]  # 2T releases at equal ε
            assert epsilon(su["dpsgd"]["noise_multiplier"], su["dpsgd"]["sample_rate"], 2 * steps, 1e-5) > eps
            assert su["dpsat"]["noise_multiplier"] == su["dpsgd"]["noise_multiplier"]
            assert su["dpsat"]["epsilon"] == su["dpsgd"]["epsilon"] == su["dpvasso_sat"]["epsilon"]
            releases = {a: [m["releases"] for m in _models(stages[f"{arch}-{a}-eps{eps}"])] for a in su}
            assert releases["dpsam"] == [2 * steps] * 3 and releases["dpsat"] == releases["dpsgd"] == [steps] * 3
            sam_eps = epsilon(su["dpsam"]["noise_multiplier"], su["dpsam"]["sample_rate"], 2 * steps, 1e-5)
            assert sam_eps == pytest.approx(su["dpsam"]["epsilon"], rel=1e-9)
            (opacus,) = stages[f"opacus-{arch}-eps{eps}"]["runs"]  # the outside row: same σ, q and steps
            assert opacus["steps"] == steps and opacus["noise_multiplier"] == su["dpsgd"]["noise_multiplier"]
            assert opacus["epsilon"] == pytest.approx(su["dpsgd"]["epsilon"], rel=1e-9)
            assert 0.0 <= opacus["test_accuracy"] <= 1.0
    timing = stages["timing-mlp"]["step_seconds"]
    assert set(timing) == set(su) and all(len(v) == 6 and min(v) > 0 for v in timing.values())
    sharp = stages["sharpness-cnn1d"]["pools"]["cnn1d-dpsat-eps8"]
    assert len(sharp) == 1 and math.isfinite(sharp[0]["lambda_max"]) and math.isfinite(sharp[0]["trace_mean"])
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert plots == {f"{kind}_{a}.png" for kind in ("accuracy", "time") for a in ("mlp", "cnn1d")}
    md = (run / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Settings against the paper's") < md.index("## mlp: accuracy")
    assert "Opacus DP-SGD (ghost)" in md and "mnist: skipped, no MNIST/raw/train-images-idx3-ubyte" in md
    assert all(f"plots/{name}" in md for name in plots)


def _write_mnist(root: Path, n_train: int, n_test: int) -> None:
    """A tiny MNIST in torchvision's raw IDX layout: class c is a bright c-th row band, so it is learnable."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4 : 2 * c + 6] = 255
        for name, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
            (raw / name).write_bytes(header + arr.astype(np.uint8).tobytes())


def test_the_2d_cnn_runs_on_image_files_under_data_root(tmp_path, capsys):
    _write_mnist(tmp_path / "data", 600, 100)
    extra = ["--set", "archs=[]", "--set", f"data_root={tmp_path / 'data'}", "--set", "sharpness_models=0", "--json"]
    assert main(_argv(tmp_path / "out", *extra)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((Path(summary["run_dir"]) / "results.json").read_text())
    pools = {k: v["summary"] for k, v in results["stages"].items() if v["kind"] == "pool"}
    assert set(pools) == {f"cnn2d-mnist-{a}-eps4" for a in ("dpsgd", "dpsam", "dpsat", "dpvasso_sat")}
    assert all(p["model"] == "cnn2d" and p["dataset"] == "mnist" and p["examples"] == 600 for p in pools.values())
    md = (Path(summary["run_dir"]) / "report.md").read_text()
    assert "## cnn2d-mnist: accuracy" in md and "fashion-mnist: skipped" in md and "cifar10: skipped" in md


def test_an_interrupted_study_resumes_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    trained = interrupt_pools(monkeypatch, 2)
    assert main(_argv(tmp_path)) == 130
    run = next(tmp_path.glob("study-dp-sat-*"))
    assert sorted(p.stem for p in (run / "stages").glob("*.json")) == ["mlp-dpsgd-eps4"]
    trained.clear()
    capsys.readouterr()
    assert main(["study", "--resume", str(run), "--json"]) == 0
    assert trained == ["mlp-dpsam-eps4", "mlp-dpsat-eps4", "mlp-dpvasso_sat-eps4"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["claims"].keys() == {"R8a", "R8b"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("archs=['resnet']", "choose from"),
        ("epsilons=[0.0]", "ε > 0"),
        ("seeds=1", "at least 2"),
        ("opacus_mode='fast'", "hooks or ghost"),
        ("image_sets=['svhn']", "is not one of"),
        ("archs=[]", "nothing to train"),
        ("timing_steps=1", "at least 2 timed steps"),
    ],
)
def test_refused_settings_are_one_line_and_leave_no_directory(tmp_path, capsys, setting, message):
    assert_refused_in_one_line(["study", "dp-sat", "--out", str(tmp_path), "--set", setting], message, capsys, tmp_path)
