"""`flatpriv study vasso-label-noise`: the direction trace against planted statistics and against `flatpriv train`,
the real --quick mode end to end, resume that skips finished stages, and the settings it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_refused_in_one_line, interrupt_pools

from flatpriv.cli import main
from flatpriv.config_io import resolve
from flatpriv.step.transforms import chain, ema, observe
from flatpriv.studies.direction_trace import Window, direction_trace
from flatpriv.train import train

TINY = ["noise_levels=[0.0, 0.4]", "thetas=[0.9]", "archs=['mlp']", "seeds=2", "num_samples=500", "trace=false"]


def _argv(out: Path, *extra: str) -> list[str]:
    return [
        "study",
        "vasso-label-noise",
        "--quick",
        "--out",
        str(out),
        *[x for s in TINY for x in ("--set", s)],
        *extra,
    ]


def test_window_statistics_match_closed_forms():
    """Alternating e₁, e₂ (norms 1 and 3): tr Cov(v) = E‖v‖² − ‖Ev‖² = 5 − 2.5, tr Cov(u) = 1 − ‖(e₁+e₂)/2‖²."""
    w = Window()
    for i in range(10):
        w.add({"a": torch.tensor([1.0, 0.0]) if i % 2 == 0 else torch.tensor([0.0, 3.0])})
    out = w.close()
    assert out["variance"] == pytest.approx(5.0 - (0.25 + 2.25))
    assert out["unit_variance"] == pytest.approx(0.5)
    assert out["mean_norm"] == pytest.approx(2.0) and out["steps"] == 10
    assert w.close()["steps"] == 0  # closing starts a new window


@pytest.mark.parametrize("theta", [0.2, 0.5, 0.9])
def test_vasso_average_suppresses_iid_noise_by_theta_over_two_minus_theta(theta):
    """science.md §1.2: with i.i.d. gradient noise, Var(d_t) = θ/(2 − θ)·Var(g_t) in the stationary regime."""
    g_win, d_win = Window(), Window()
    t = chain(observe(g_win.add), ema(theta), observe(d_win.add))
    state = t.init({})
    gen = torch.Generator().manual_seed(0)
    mean = torch.linspace(-1, 1, 50)
    for step in range(20000):
        _, state = t.update({"w": mean + torch.randn(50, generator=gen)}, state, {})
        if step == 200:  # burn-in: d_1 = g_1 starts away from the stationary law
            g_win.close(), d_win.close()
    ratio = d_win.close()["variance"] / g_win.close()["variance"]
    assert ratio == pytest.approx(theta / (2 - theta), rel=0.05)


@pytest.mark.parametrize("algorithm, extra", [("sam", []), ("vasso", ["sharpness.theta=0.4"])])
def test_the_traced_run_is_the_run_flatpriv_train_makes(tmp_path, algorithm, extra):
    over = ["data.num_samples=300", "model.width=16", "train.epochs=2", "train.batch_size=64", *extra]
    cfg, _ = resolve(preset=algorithm, overrides=over)
    traced = direction_trace(cfg)
    summary = train(cfg, out=tmp_path, quiet=True)
    weights = torch.load(Path(summary["run_dir"]) / "model.pt", weights_only=True)
    for k, v in weights.items():
        torch.testing.assert_close(traced["weights"][k], v, rtol=0, atol=1e-6)
    assert traced["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    series = traced["series"]
    assert set(series) == ({"g", "d"} if algorithm == "vasso" else {"g"})
    assert all(0 <= u <= 1 for u in series["g"]["unit_variance"]) and len(series["g"]["unit_variance"]) == 2
    if algorithm == "vasso":  # θ = 0.4 averages: its direction varies less than the raw gradient on the same run
        assert all(d < g for d, g in zip(series["d"]["unit_variance"], series["g"]["unit_variance"]))


def test_quick_mode_end_to_end(tmp_path, capsys):
    """The real --quick settings: every pool, trace and sharpness stage, the R7 parts, every plot."""
    assert main(["study", "vasso-label-noise", "--quick", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    results = json.loads((run / "results.json").read_text())
    (claim,) = results["claims"]
    labels = [p["label"] for p in claim["parts"]]
    assert len(labels) == 2 * (2 * 2 + 1) and "cnn1d: (VaSSO − SAM) at 40 % − at 0 %" in labels
    for part in claim["parts"]:
        assert part["count"] == 3 and part["ci"][0] <= part["value"] + 1e-12 <= part["ci"][1] + 1e-12
    stages = results["stages"]
    pools = [k for k, v in stages.items() if v["kind"] == "pool"]
    assert len(pools) == 2 * 2 * 4  # models × noise levels × (SGD, SAM, VaSSO at 2 θ)
    assert all(stages[p]["summary"]["models"] == 3 and stages[p]["summary"]["keep_fraction"] == 1.0 for p in pools)
    sharp = stages["sharpness-cnn1d"]["pools"]["cnn1d-sam-noise40"]
    assert len(sharp) == 2 and all(m["lambda_max"] > 0 and m["trace_mean"] > 0 for m in sharp)
    trace = stages["trace-mlp-noise40"]["runs"]
    assert set(trace) == {"sam", "vasso-0.4", "vasso-0.9"} and set(trace["vasso-0.4"]["series"]) == {"g", "d"}
    plots = {p.name for p in (run / "plots").glob("*.png")}
    expected = {f"{kind}_{a}.png" for kind in ("accuracy", "memorised_noise") for a in ("mlp", "cnn1d")}
    expected |= {f"direction_{a}_noise{p}.png" for a in ("mlp", "cnn1d") for p in (0, 40)}
    assert plots == expected
    md = (run / "report.md").read_text()
    assert md.index("## Claims") < md.index("## R7 on the mlp") < md.index("## R7 on the cnn1d")
    assert all(f"plots/{name}" in md for name in plots)


def test_an_interrupted_study_resumes_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    trained = interrupt_pools(monkeypatch, 3)
    assert main(_argv(tmp_path)) == 130
    run = next(tmp_path.glob("study-vasso-label-noise-*"))
    assert sorted(p.stem for p in (run / "stages").glob("*.json")) == ["mlp-sam-noise0", "mlp-sgd-noise0"]
    trained.clear()
    capsys.readouterr()
    assert main(["study", "--resume", str(run), "--json"]) == 0
    assert trained == ["mlp-vasso-0.9-noise0", "mlp-sgd-noise40", "mlp-sam-noise40", "mlp-vasso-0.9-noise40"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["claims"].keys() == {"R7"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("noise_levels=[0.0, 0.2]", "keep both"),
        ("judged_theta=0.5", "judged θ"),
        ("archs=['resnet']", "choose from"),
        ("seeds=1", "at least 2"),
        ("sharpness_subset=100000", "larger than the training set"),
    ],
)
def test_refused_settings_are_one_line_and_leave_no_directory(tmp_path, capsys, setting, message):
    assert_refused_in_one_line(
        ["study", "vasso-label-noise", "--out", str(tmp_path), "--set", setting], message, capsys, tmp_path
    )
