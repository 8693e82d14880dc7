"""DP training pipelines: noise calibration of the privatizer, release counting, DP-SAT's reductions,
micro-batching, Noisy-SGD's missing ε, refusals, and resume of a DP run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, interrupt_after
from scipy import stats

from flatpriv.cli.main import main
from flatpriv.config_io import resolve
from flatpriv.errors import FlatprivError
from flatpriv.privacy import Privatizer
from flatpriv.privacy.accounting import Ledger, epsilon
from flatpriv.privacy.sampling import make_generator, poisson_indices
from flatpriv.step import ALGORITHMS, take_step
from flatpriv.train import prepare, resume, train

train_module = importlib.import_module("flatpriv.train")  # the module itself (flatpriv.train is also a function)

DP = TINY + ["privacy.noise_seed=7", "privacy.noise_multiplier=1.0", "train.batch_size=128"]


def test_noise_std_passes_ks_and_wrong_std_fails():
    sigma, clip, expected_batch = 1.3, 0.5, 64.0
    priv = Privatizer(sigma, 0.1, expected_batch, make_generator(0), Ledger([]))
    zero = {"w": torch.zeros(20000, dtype=torch.float64)}
    noise = priv.release(zero, clip)["w"].numpy()
    std = sigma * clip / expected_batch
    assert stats.kstest(noise, "norm", args=(0, std)).pvalue > 0.01
    assert stats.kstest(noise, "norm", args=(0, std * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(noise, "norm", args=(0, std * 3 / 2)).pvalue < 1e-6
    assert priv.ledger.releases == 1


def test_poisson_sampling_rate_and_empty_batches():
    g = make_generator(3)
    sizes = [len(poisson_indices(1000, 0.05, g)) for _ in range(400)]
    assert abs(np.mean(sizes) - 50) < 2 and np.std(sizes) > 3  # sizes vary, mean q·N
    assert len(poisson_indices(1000, 1e-9, g)) == 0


def _one_step(algorithm: str, extra=()):
    cfg, _ = resolve(overrides=DP + [f"algorithm={algorithm}", *extra])
    s = prepare(cfg)
    params = dict(s.model.named_parameters())
    state = s.pipeline.init(params)
    x, y = s.data.x_train[:100], s.data.y_train[:100]
    state, _ = take_step(s.pipeline, params, state, s.optimizer, x, y)
    return s, params, state


def test_dpsat_first_step_equals_dpsgd():
    _, a, _ = _one_step("dpsgd")
    _, b, _ = _one_step("dpsat", ["sharpness.rho=0.5"])
    _, c, _ = _one_step("dpsam", ["sharpness.rho=0.5"])
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a)  # DP-SAM's first step does perturb


def test_releases_per_step_and_epsilon_equalities():
    eps = {}
    for alg in ("dpsgd", "dpsat", "dpvasso_sat", "dpsam"):
        s, params, state = _one_step(alg)
        x, y = s.data.x_train[:50], s.data.y_train[:50]
        take_step(s.pipeline, params, state, s.optimizer, x, y)
        ledger = s.private.privatizer.ledger
        assert ledger.releases == 2 * ALGORITHMS[alg].releases
        eps[alg] = s.private.epsilon()
    q = eps and prepare(resolve(overrides=DP + ["algorithm=dpsgd"])[0]).private.sample_rate
    assert eps["dpsat"] == eps["dpsgd"] == eps["dpvasso_sat"]
    assert eps["dpsgd"] == pytest.approx(epsilon(1.0, q, 2, 1e-5, "pld"), rel=1e-9)
    assert eps["dpsam"] == pytest.approx(epsilon(1.0, q, 4, 1e-5, "pld"), rel=1e-9)
    assert eps["dpsam"] > eps["dpsgd"]


@pytest.mark.parametrize("algorithm", ["dpsat", "dpsam"])
def test_micro_batches_give_the_same_weights(algorithm):
    def run(physical: int):
        s, params, state = _one_step(algorithm, [f"privacy.physical_batch_size={physical}", "sharpness.rho=0.3"])
        x, y = s.data.x_train[100:190], s.data.y_train[100:190]
        take_step(s.pipeline, params, state, s.optimizer, x, y)
        return {k: v.detach().clone() for k, v in params.items()}

    one, many = run(0), run(16)
    for k in one:
        torch.testing.assert_close(one[k], many[k], atol=1e-6, rtol=1e-5)


def test_empty_batch_still_releases_noise():
    s, params, state = _one_step("dpsgd")
    before = {k: v.detach().clone() for k, v in params.items()}
    empty = s.data.x_train[:0], s.data.y_train[:0]
    take_step(s.pipeline, params, state, s.optimizer, *empty)
    assert s.private.privatizer.ledger.releases == 2
    assert any(not torch.equal(before[k], params[k]) for k in params)


def test_noisy_sgd_reports_no_epsilon(tmp_path):
    cfg, _ = resolve(overrides=TINY + ["algorithm=noisy_sgd", "privacy.noise_multiplier=2.0"])
    s = train(cfg, out=tmp_path, quiet=True)
    assert s["epsilon"] is None and "not differentially private" in s["epsilon_note"]
    metrics = [json.loads(x) for x in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert all(m["epsilon"] is None for m in metrics)


def test_dp_run_summary_ledger_and_resume_same_epsilon(tmp_path, monkeypatch):
    cfg, _ = resolve(overrides=DP + ["algorithm=dpsat", "train.epochs=3"])
    full = train(cfg, out=tmp_path / "a", quiet=True)
    interrupt_after(monkeypatch, train_module, "_save_checkpoint", 1)
    part = train(cfg, out=tmp_path / "b", quiet=True)
    done = resume(part["run_dir"], quiet=True)
    assert done["epsilon"] == full["epsilon"] and done["releases"] == full["releases"]
    a = torch.load(Path(full["run_dir"]) / "model.pt", weights_only=True)
    b = torch.load(Path(done["run_dir"]) / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ledger = Ledger.from_dict(json.loads((Path(full["run_dir"]) / "privacy_ledger.json").read_text()))
    assert ledger.releases == full["steps"] == full["releases"]
    assert full["epsilon"] == pytest.approx(epsilon(1.0, full["sample_rate"], full["steps"], 1e-5), rel=1e-9)
    assert "add/remove" in full["neighbouring"] and "PLD" in full["accountant"]


def test_target_epsilon_is_never_exceeded(tmp_path):
    cfg, _ = resolve(overrides=TINY + ["algorithm=dpsgd", "privacy.target_epsilon=2.0", "train.epochs=2"])
    s = train(cfg, out=tmp_path, quiet=True)
    assert 1.9 < s["epsilon"] <= 2.0


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["algorithm=sam", "privacy.target_epsilon=3"], "not private"),
        (["algorithm=dpsgd"], "needs noise"),
        (["algorithm=dpsgd", "privacy.target_epsilon=1", "privacy.noise_multiplier=1"], "not both"),
        (["algorithm=noisy_sgd", "privacy.target_epsilon=1"], "noisy_sgd"),
        (["algorithm=dpsgd", "privacy.noise_multiplier=1", "train.batch_size=5000"], "outside (0, 1]"),
        (["algorithm=dpsgd", "privacy.sample_rate=1.5"], "privacy.sample_rate"),
        (["algorithm=dpsgd", "privacy.target_epsilon=1e-9"], "epsilon"),
    ],
)
def test_refused_configurations(tmp_path, capsys, extra, fragment):
    argv = [x for o in TINY + extra for x in ("--set", o)]
    code = main(["train", *argv, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    with pytest.raises(FlatprivError):
        prepare(resolve(overrides=TINY + extra)[0])


def test_cli_privacy_epsilon_and_calibrate(capsys):
    code = main(
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "1.5",
            "--sample-rate",
            "0.04",
            "--steps",
            "2250",
            "--accountant",
            "rdp",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["epsilon"] == pytest.approx(7.3291, abs=1e-3)
    assert "RDP" in out["accountant"] and out["neighbouring"] == "add/remove-one"
    code = main(
        [
            "privacy",
            "calibrate",
            "--target-epsilon",
            "3",
            "--sample-rate",
            "0.0256",
            "--steps",
            "585",
            "--releases-per-step",
            "2",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["epsilon"] <= 3.0
    assert out["epsilon"] == pytest.approx(epsilon(out["noise_multiplier"], 0.0256, 1170, 1e-5, "pld"), rel=1e-9)
    code = main(["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sample_rate" in err
