"""Hostile and careless input (issue 15), continued: the secure noise source, data files, full or read-only disks,
pool resume options, and integers too large to run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, interrupt_after
from scipy import stats

from flatpriv.cli import main

sampling = importlib.import_module("flatpriv.privacy.sampling")
train_module = importlib.import_module("flatpriv.train")  # the module itself (flatpriv.train is also a function)

DP = TINY + ["algorithm=dpsgd", "privacy.noise_multiplier=1"]
SECURE = DP + ["privacy.secure_rng=true"]


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_refusal(code: int, err: str, fragment: str = "") -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and fragment in err, err


def _sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


# --- privacy.secure_rng -------------------------------------------------------------------------------------


def test_secure_draws_are_standard_normal_and_bernoulli_q():
    src = sampling.make_generator(-1, "cpu", secure=True)
    assert isinstance(src, sampling.SecureSource)
    z = sampling.standard_normal({"a": torch.zeros(60_001), "b": torch.zeros(200, 200, dtype=torch.float64)}, src)
    assert z["a"].dtype == torch.float32 and z["b"].dtype == torch.float64 and z["b"].shape == (200, 200)
    draws = np.concatenate([z["a"].numpy(), z["b"].numpy().ravel()])  # 100 001 draws
    # Fixed thresholds: a correct source fails each with probability 1e-4 (KS) or ~1e-9 (moments).
    assert stats.kstest(draws, "norm").pvalue > 1e-4
    assert abs(draws.mean()) < 6 / np.sqrt(len(draws)) and abs(draws.var() - 1) < 6 * np.sqrt(2 / len(draws))
    assert stats.kstest(src.uniform(100_000), "uniform").pvalue > 1e-4
    # The test can fail: a shifted or rescaled normal is far outside these thresholds.
    assert stats.kstest(draws * 1.05, "norm").pvalue < 1e-4 and stats.kstest(draws + 0.05, "norm").pvalue < 1e-4

    n, q, rounds = 5000, 0.1, 200
    masks = np.zeros((rounds, n), dtype=bool)
    for r in range(rounds):
        idx = sampling.poisson_indices(n, q, src)
        assert idx.dtype == torch.long and len(torch.unique(idx)) == len(idx)
        masks[r, idx.numpy()] = True
    sizes = masks.sum(1)
    assert abs(sizes.mean() - q * n) < 6 * np.sqrt(n * q * (1 - q) / rounds)  # E|B| = qN
    assert abs(sizes.var(ddof=1) / (n * q * (1 - q)) - 1) < 0.5  # Var|B| = Nq(1−q): Bernoulli, not fixed size
    counts = masks.sum(0)  # example i joins each sample with probability q, independently: Binomial(rounds, q)
    assert abs(counts.var(ddof=1) / (rounds * q * (1 - q)) - 1) < 0.15
    a, b = (sampling.standard_normal({"w": torch.zeros(8)}, src)["w"] for _ in range(2))
    assert not torch.equal(a, b)
    assert src.get_state().numel() == 0  # nothing to save: no seed, no state


def _weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "model.pt", weights_only=True)


def test_secure_dp_runs_train_differ_by_seed_and_report_the_same_epsilon(tmp_path, capsys, monkeypatch):
    from flatpriv.config_io import resolve
    from flatpriv.train import resume, train

    plain_cfg, _ = resolve(overrides=DP)
    secure_cfg, _ = resolve(overrides=SECURE)
    reference = train(plain_cfg, out=tmp_path / "plain", quiet=True)

    drawn = [0]
    real = sampling._os_bytes

    def counted(n: int) -> bytes:
        drawn[0] += n
        return real(n)

    monkeypatch.setattr(sampling, "_os_bytes", counted)
    one = train(secure_cfg, out=tmp_path / "a", quiet=True)
    # every Poisson uniform (one per example per step) and every noise draw (pairs of uniforms) came from the OS
    n = 1347  # digits' training set
    params = [int(v.numel()) for v in _weights(one["run_dir"]).values()]
    per_step = 8 * (n + sum(2 * ((m + 1) // 2) for m in params))
    assert drawn[0] == one["steps"] * per_step
    two = train(secure_cfg, out=tmp_path / "b", quiet=True)
    assert one["epsilon"] == two["epsilon"] == reference["epsilon"] and one["steps"] == reference["steps"]
    assert one["test_accuracy"] > 0.3  # it trains (10 classes: chance is 0.1)
    assert all(
        not torch.equal(a, b) for a, b in zip(_weights(one["run_dir"]).values(), _weights(two["run_dir"]).values())
    )
    assert "os.urandom" in one["noise_source"] and "OS entropy" in reference["noise_source"]

    # An interrupted secure run resumes (fresh draws) and is charged exactly what an uninterrupted one is.
    with pytest.MonkeyPatch.context() as mp:
        interrupt_after(mp, train_module, "_save_checkpoint", 1)
        part = train(secure_cfg, out=tmp_path / "part", quiet=True)
    assert part["finished"] is False
    done = resume(part["run_dir"], quiet=True)
    assert done["epsilon"] == reference["epsilon"] and done["steps"] == reference["steps"]
    ledger = json.loads((Path(part["run_dir"]) / "privacy_ledger.json").read_text())
    assert ledger == json.loads((Path(reference["run_dir"]) / "privacy_ledger.json").read_text())

    code, out, err = _cli(capsys, "train", *_sets(SECURE + ["train.epochs=1"]), "--out", str(tmp_path / "c"))
    assert code == 0 and "noise and Poisson sampling from os.urandom" in out, err


def test_secure_rng_refuses_a_seed_and_non_private_rows_and_works_for_pools(tmp_path, capsys):
    out = tmp_path / "runs"
    for extra, fragment in (
        (["privacy.noise_seed=3"], "cannot be seeded"),
        (["algorithm=sgd", "privacy.noise_multiplier=0"], "not private"),
    ):
        _one_line_refusal(*_cli(capsys, "train", *_sets(SECURE + extra), "--out", str(out))[::2], fragment)
    assert not out.exists()

    from flatpriv.config_io import resolve
    from flatpriv.pools import train_pool

    pools, drawn = {}, [0]
    real = sampling._os_bytes

    def counted(n: int) -> bytes:
        drawn[0] += n
        return real(n)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "_os_bytes", counted)
        for name, overrides in (("plain", DP), ("secure", SECURE)):
            cfg, _ = resolve(overrides=overrides + ["train.epochs=3"])
            pools[name] = train_pool(cfg, 2, out=tmp_path / name, quiet=True, save_weights=True)
    assert pools["secure"]["test_accuracy"] > 0.25 and pools["plain"]["test_accuracy"] > 0.25  # chance: 0.1
    assert pools["secure"]["epsilon"] == pools["plain"]["epsilon"]
    assert "os.urandom" in pools["secure"]["noise_source"]
    # model k's Poisson uniforms over its subset and its noise, every step, all came from the OS (the plain pool's
    # generators draw nothing from it: their seeds come from `secrets`, which reads the OS by another name)
    run = Path(pools["secure"]["run_dir"])
    (chunk,) = run.glob("chunks/*.npz")
    with np.load(chunk) as z:
        noise = sum(2 * ((int(np.prod(z[k].shape[1:])) + 1) // 2) for k in z.files if k.startswith("param/"))
    models = [json.loads(line) for line in (run / "models.jsonl").read_text().splitlines()]
    expected = sum(8 * 3 * round(1 / m["sample_rate"]) * (m["kept"] + noise) for m in models)
    assert drawn[0] == expected
