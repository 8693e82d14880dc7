"""Pools: the vectorized pool equals K separate single-model runs; keep masks; resume; CLI files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_pool_matches_single_runs, interrupt_after

from flatpriv.analyses.attack import ATTACKS
from flatpriv.cli.main import main
from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.errors import FlatprivError
from flatpriv.pools import make_keep, resume_pool, train_models, train_pool

pool_run = importlib.import_module("flatpriv.pools.run")  # the module itself (flatpriv.train is also a function)


def test_keep_masks_exact_fraction_and_seeded():
    keep = make_keep(8, 101, 0.5, seed=3)
    assert keep.dtype == bool and (keep.sum(1) == 50).all()
    assert (keep == make_keep(8, 101, 0.5, seed=3)).all() and not (keep == make_keep(8, 101, 0.5, seed=4)).all()
    assert len({tuple(r) for r in keep}) == 8  # models see different subsets
    with pytest.raises(FlatprivError):
        make_keep(4, 10, 1.2, 0)
    assert make_keep(4, 10, 1.0, 0).all()  # fraction 1: a seed sweep, every model on every example
    with pytest.raises(FlatprivError):
        make_keep(4, 10, 1.0, 0, "bernoulli")


def test_bernoulli_keep_masks_are_independent_coin_flips():
    from scipy.stats import binomtest

    keep = make_keep(400, 500, 0.3, seed=2, mode="bernoulli")
    assert (keep == make_keep(400, 500, 0.3, seed=2, mode="bernoulli")).all()
    assert len(set(keep.sum(1))) > 10  # subset sizes vary, unlike exact masks
    assert binomtest(int(keep.sum()), keep.size, 0.3).pvalue > 1e-3
    # independent over examples and models: P(both in) = 0.09 for a pair of examples
    both = (keep[:, 0] & keep[:, 1]).sum() + (keep[:, 2] & keep[:, 3]).sum()
    assert binomtest(int(both), 800, 0.09).pvalue > 1e-3
    with pytest.raises(FlatprivError, match="some in and some out"):
        make_keep(3, 4, 0.01, seed=0, mode="bernoulli")
    with pytest.raises(FlatprivError, match="keep-mode"):
        make_keep(3, 4, 0.5, seed=0, mode="poisson")


BERNOULLI_CASES = {
    "sgd": ["algorithm=sgd"],
    "sgd-adam": ["algorithm=sgd", "optim.name=adam", "optim.lr=0.01"],
    "vasso": ["algorithm=vasso", "sharpness.rho=0.2", "sharpness.theta=0.5"],
    "noisy_sgd": ["algorithm=noisy_sgd", "privacy.noise_multiplier=2.0", "privacy.noise_seed=11"],
    "dpsgd": ["algorithm=dpsgd", "privacy.target_epsilon=4", "privacy.noise_seed=11", "privacy.delta=1e-4"],
    "dpsat": ["algorithm=dpsat", "privacy.noise_multiplier=1.0", "privacy.noise_seed=11", "sharpness.rho=0.2"],
}


@pytest.mark.parametrize("case", list(BERNOULLI_CASES))
def test_bernoulli_pool_equals_separate_runs(tmp_path, case):
    """Subset sizes differ, so step counts, short last batches, cosine schedules (and for DP q_k, σ_k, ε_k) differ
    per model; each model still equals its own single run."""
    over = TINY + BERNOULLI_CASES[case] + ["train.epochs=2", "train.batch_size=32"]
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=30, mode="bernoulli")
    sizes = keep.sum(1)
    assert len({int(np.ceil(m / 32)) for m in sizes}) == 3 and len({round(m / 32) for m in sizes}) == 3
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    for k, s in enumerate(assert_pool_matches_single_runs(pooled, over, keep, tmp_path, noise_seed=11)):
        if s["epsilon"] is not None:
            assert pooled["epsilon"][k] == s["epsilon"] and pooled["releases"][k] == s["releases"]
            assert pooled["noise_multiplier"][k] == s["noise_multiplier"]


@pytest.mark.parametrize("algorithm", ["sgd", "sam", "vasso"])
def test_pool_equals_separate_runs(tmp_path, algorithm):
    cfg, _ = resolve(overrides=TINY + [f"algorithm={algorithm}", "seed=5", "train.epochs=2"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=1)
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    over = TINY + [f"algorithm={algorithm}", "train.epochs=2"]
    for k, s in enumerate(assert_pool_matches_single_runs(pooled, over, keep, tmp_path)):
        assert pooled["test_accuracy"][k] == pytest.approx(s["test_accuracy"], abs=2e-3)


def test_pool_resume_equals_uninterrupted(tmp_path, monkeypatch):
    cfg, _ = resolve(overrides=TINY + ["train.epochs=1"])
    full = train_pool(cfg, 4, chunk_size=2, out=tmp_path / "a", quiet=True)
    interrupt_after(monkeypatch, pool_run, "save_chunk", 1)
    part = train_pool(cfg, 4, chunk_size=2, out=tmp_path / "b", quiet=True)
    assert part["interrupted_after_chunk"] == 1
    done = resume_pool(part["run_dir"], quiet=True)
    for name in ("keep", "train_logits", "test_logits"):
        a = np.load(Path(full["run_dir"]) / "arrays" / f"{name}.npy")
        b = np.load(Path(done["run_dir"]) / "arrays" / f"{name}.npy")
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FlatprivError, match="already finished"):
        resume_pool(done["run_dir"])


def test_cli_pool_writes_the_promised_files(tmp_path, capsys):
    argv = [x for o in TINY + ["train.epochs=1"] for x in ("--set", o)]
    code = main(["pool", *argv, "--models", "4", "--chunk-size", "3", "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    keep = np.load(run / "arrays" / "keep.npy")
    logits = np.load(run / "arrays" / "train_logits.npy")
    labels = np.load(run / "arrays" / "train_labels.npy")
    assert keep.shape == (4, len(labels)) and logits.shape == (4, len(labels), 10)
    assert np.load(run / "arrays" / "test_logits.npy").shape[0] == 4
    models = [json.loads(x) for x in (run / "models.jsonl").read_text().splitlines()]
    assert [m["seed"] for m in models] == [0, 1, 2, 3]
    acc_in = np.mean([(logits[k].argmax(1) == labels)[keep[k]].mean() for k in range(4)])
    assert acc_in == pytest.approx(summary["train_accuracy"], abs=5e-3)  # float16 logits
    # a Noisy-SGD pool says it has no ε, and why
    assert (
        main(
            [
                "pool",
                *argv,
                "--models",
                "2",
                "--set",
                "algorithm=noisy_sgd",
                "--set",
                "privacy.noise_multiplier=1",
                "--out",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    noisy = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert noisy["epsilon"] is None and "not differentially private" in noisy["epsilon_note"]
    for bad, fragment in (
        (["--models", "1"], "at least 2"),
        (["--models", "4", "--keep", "1.5"], "--keep"),
        (["--models", "4", "--set", "algorithm=noisy_sgd", "--set", "privacy.target_epsilon=1"], "no clipping"),
        (["--models", "4", "--keep-mode", "bernoulli", "--keep", "0.001"], "some in and some out"),
        (["--models", "4", "--set", "algorithm=dpsgd"], "needs noise"),
    ):
        code = main(["pool", *argv, *bad, "--out", str(tmp_path / "bad")])
        assert code == 2 and fragment in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_memorization_on_a_pool(tmp_path, capsys):
    argv = [x for o in TINY + ["train.epochs=2"] for x in ("--set", o)]
    runs = []
    for alg in ("sgd", "sam"):
        assert (
            main(["pool", *argv, "--set", f"algorithm={alg}", "--models", "6", "--out", str(tmp_path), "--json"]) == 0
        )
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    code = main(["memorization", runs[0], "--compare", runs[1], "--out", str(tmp_path / "m"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    d = Path(s["run_dir"])
    mem = np.load(d / "arrays" / "memorization.npy")
    assert mem.shape == (s["examples"],) and np.nanmax(mem) <= 1 and np.nanmin(mem) >= -1
    assert (d / "plots" / "memorization_hist.png").stat().st_size > 1000
    assert len(s["buckets"]) == 5 and all(b["ci_low"] <= b["diff"] <= b["ci_high"] for b in s["buckets"])
    assert np.load(d / "arrays" / "influence.npy").shape[1] == s["examples"]
    # bad input: not a pool, and corrupted arrays
    assert main(["memorization", str(tmp_path), "--out", str(tmp_path / "bad")]) == 2
    assert "not a pool" in capsys.readouterr().err
    logits = np.load(Path(runs[0]) / "arrays" / "train_logits.npy")
    logits[0, 0, 0] = np.nan
    np.save(Path(runs[0]) / "arrays" / "train_logits.npy", logits)
    assert main(["memorization", runs[0], "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("finite" in err or "corrupt" in err)
    assert not (tmp_path / "bad").exists()


def test_cli_attack_on_pools(tmp_path, capsys):
    argv = [x for o in TINY + ["train.epochs=3", "model.width=128"] for x in ("--set", o)]
    runs = []
    for alg in ("sgd", "sam"):
        assert (
            main(["pool", *argv, "--set", f"algorithm={alg}", "--models", "8", "--out", str(tmp_path), "--json"]) == 0
        )
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    code = main(["attack", *runs, "--bootstrap", "20", "--out", str(tmp_path / "a"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    d = Path(s["run_dir"])
    assert len(s["table"]) == 2 * len(ATTACKS) and (d / "plots" / "roc_loglog.png").stat().st_size > 1000
    for row in s["table"]:
        assert 0 <= row["auc"] <= 1 and row["n_members"] > 0 and row["n_nonmembers"] > 0
        assert row["epsilon_lower_bound"] >= 0 and row["accountant_epsilon"] is None
    # members are told apart better than chance by LiRA on a non-private, overfitted pool
    lira = [r for r in s["table"] if r["attack"] == "lira_online_fixed"]
    assert all(r["auc"] > 0.5 for r in lira)
    vuln = np.load(d / "arrays" / "vulnerability_pool0.npy")
    assert vuln.shape == (len(np.load(Path(runs[0]) / "arrays" / "train_labels.npy")),)
    # bad input: a non-pool, and pools over different data
    assert main(["attack", str(tmp_path / "a"), "--out", str(tmp_path / "bad")]) == 2
    other = TINY + ["train.epochs=1", "data.name=mnist1d", "data.num_samples=400"]
    assert (
        main(["pool", *[x for o in other for x in ("--set", o)], "--models", "4", "--out", str(tmp_path), "--json"])
        == 0
    )
    other_run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]
    assert main(["attack", runs[0], other_run, "--out", str(tmp_path / "bad")]) == 2
    assert "different data" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_curvature_on_a_run_and_a_pool(tmp_path, capsys):
    argv = [x for o in TINY + ["train.epochs=3", "data.label_noise=0.1"] for x in ("--set", o)]
    assert main(["train", *argv, "--out", str(tmp_path), "--json"]) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]
    assert main(["curvature", run, "--probes", "4", "--out", str(tmp_path / "c"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    curv = np.load(Path(s["run_dir"]) / "arrays" / "curvature.npy")
    assert curv.shape == (1347,) and np.isfinite(curv).all() and (curv >= 0).all()
    assert 0 <= s["mislabel_auroc"] <= 1 and (Path(s["run_dir"]) / "plots" / "curvature_hist.png").exists()
    assert main(["pool", *argv, "--models", "4", "--save-weights", "--out", str(tmp_path), "--json"]) == 0
    pool = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]
    assert main(["curvature", pool, "--probes", "2", "--out", str(tmp_path / "c"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["models"] == 4 and -1 <= s["spearman_curvature_memorization"] <= 1
    assert main(["curvature", str(tmp_path), "--out", str(tmp_path / "bad")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", ["dpsgd", "dpsam", "dpsat", "dpvasso_sat"])
def test_dp_pool_equals_separate_runs(tmp_path, algorithm):
    over = [
        "train.epochs=2",
        f"algorithm={algorithm}",
        "privacy.noise_multiplier=1.0",
        "privacy.noise_seed=11",
        "train.batch_size=64",
        "sharpness.rho=0.2",
        "sharpness.theta=0.5",
    ]
    cfg, _ = resolve(overrides=TINY + over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=1)
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    for k, s in enumerate(assert_pool_matches_single_runs(pooled, TINY + over, keep, tmp_path, noise_seed=11)):
        assert pooled["epsilon"][k] == s["epsilon"] and pooled["releases"][k] == s["releases"]


def test_canaries_are_mislabelled_in_every_model_and_audited_alone(tmp_path, capsys):
    argv = [x for o in TINY + ["train.epochs=3", "model.width=128"] for x in ("--set", o)]
    assert main(["pool", *argv, "--models", "6", "--canaries", "20", "--out", str(tmp_path), "--json"]) == 0
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    canaries = np.load(run / "arrays" / "canaries.npy")
    wrong = np.load(run / "arrays" / "canary_labels.npy")
    clean = np.load(run / "arrays" / "clean_labels.npy")
    assert len(canaries) == 20 and (wrong != clean[canaries]).all()
    assert (np.load(run / "arrays" / "train_labels.npy")[canaries] == wrong).all()
    assert main(["attack", str(run), "--bootstrap", "0", "--out", str(tmp_path / "a"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["table"]
    assert all(r["n_canaries"] == 20 and r["epsilon_lower_bound_canaries"] >= 0 for r in rows)


def test_ray_backend_equals_local(tmp_path):
    ray = pytest.importorskip("ray")
    cfg, _ = resolve(overrides=TINY + ["train.epochs=1"])
    local = train_pool(cfg, 4, chunk_size=2, out=tmp_path / "local", quiet=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = train_pool(cfg, 4, chunk_size=2, out=tmp_path / "ray", quiet=True, backend="ray")
    finally:
        ray.shutdown()
    for name in ("keep", "train_logits", "test_logits", "train_labels"):
        a = np.load(Path(local["run_dir"]) / "arrays" / f"{name}.npy").astype(np.float64)
        b = np.load(Path(remote["run_dir"]) / "arrays" / f"{name}.npy").astype(np.float64)
        np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-3)  # float16 logits; threads may differ per worker
    assert remote["test_accuracy"] == pytest.approx(local["test_accuracy"], abs=1e-3)


def test_rare_subpopulations_get_higher_memorization_in_a_real_pool():
    from scipy.stats import mannwhitneyu

    from flatpriv.memorization import correctness, memorization

    cfg, _ = resolve(
        overrides=[
            "data.name=synthetic-longtail",
            "data.typical_per_class=30",
            "data.rare_size=1",
            "data.rare_groups_per_class=4",
            "data.dim=16",
            "model.width=64",
            "model.depth=1",
            "train.epochs=30",
            "train.batch_size=32",
            "optim.lr=0.05",
        ]
    )
    data = load_data(cfg.data)
    keep = make_keep(16, len(data.y_train), 0.5, seed=0)
    r = train_models(cfg, data, keep, seeds=list(range(16)))
    mem = memorization(keep, correctness(r["train_logits"].numpy(), data.y_train.numpy())).score
    rare = data.meta["train_rare"]
    assert rare.sum() == 40 and np.isfinite(mem).all()
    assert np.mean(mem[rare]) > np.mean(mem[~rare]) + 0.3
    assert mannwhitneyu(mem[rare], mem[~rare], alternative="greater").pvalue < 1e-6


def test_curvature_every_k_epochs_is_averaged_by_flatpriv_curvature(tmp_path, capsys):
    argv = [
        x
        for o in TINY + ["train.epochs=4", "train.curvature_every=2", "train.curvature_probes=2"]
        for x in ("--set", o)
    ]
    assert main(["train", *argv, "--out", str(tmp_path), "--json"]) == 0
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    kept = sorted((run / "arrays").glob("curvature_epoch_*.npy"))
    assert [f.name for f in kept] == ["curvature_epoch_0002.npy", "curvature_epoch_0004.npy"]
    assert main(["curvature", str(run), "--probes", "2", "--out", str(tmp_path / "c"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["aggregated_over_epochs"] == [2, 4]
    mean = np.mean([np.load(f) for f in kept], axis=0)
    np.testing.assert_allclose(np.load(Path(s["run_dir"]) / "arrays" / "curvature.npy"), mean, rtol=1e-6)


def test_chunks_are_sized_to_a_memory_budget(tmp_path, capsys):
    from flatpriv.pools.memory import GIB, chunk_size, pool_memory

    cfg, _ = resolve(overrides=TINY + ["model.width=32", "model.depth=1", "train.batch_size=64"])
    data = load_data(cfg.data)
    n, m = len(data.y_train), len(data.y_test)
    # by hand: digits 8x8 -> Flatten 64 -> Linear 32 -> ReLU 32 -> Linear 10; 2410 parameters, 138 activations
    assert data.input_shape == (1, 8, 8)
    cpu = torch.device("cpu")
    per_model, per_chunk = pool_memory(cfg, data.input_shape, 10, n, m, n // 2, cpu)
    assert per_model == 4 * (10 * 2410 + 5 * (n + m) * 10 + 2**20 + 3 * 64 * 138)
    assert per_chunk == 4 * 2 * cfg.train.eval_batch_size * 64  # the largest layer output: Flatten's 64
    dp, _ = resolve(overrides=TINY + ["algorithm=dpsgd", "privacy.noise_multiplier=1"])
    dp_model, dp_chunk = pool_memory(dp, data.input_shape, 10, n, m, n // 2, cpu)
    poisson = 64 + 4 * 8  # q·|S| = batch size 64
    assert dp_model == 4 * (10 * 2410 + 5 * (n + m) * 10 + 2**20 + 3 * poisson * 138)  # vmapped ghost clipping
    assert dp_chunk == per_chunk
    # a CNN on a CPU steps one model at a time: its activations are paid once per chunk, not per model
    cnn, _ = resolve(overrides=TINY + ["model.name=cnn2d"])
    cnn_model, cnn_chunk = pool_memory(cnn, data.input_shape, 10, n, m, n // 2, cpu)
    cnn_gpu, cnn_gpu_chunk = pool_memory(cnn, data.input_shape, 10, n, m, n // 2, torch.device("cuda"))
    assert cnn_model < cnn_gpu and cnn_chunk > cnn_gpu_chunk
    unit = per_model / GIB
    assert chunk_size(None, 10.5 * unit, per_model, 0, cpu, 100) == 10
    assert chunk_size(None, 10.5 * unit, per_model, 2 * per_model, cpu, 100) == 8
    assert chunk_size(None, 1000.0, per_model, 0, cpu, 100) == 64
    assert chunk_size(None, 1000.0, per_model, 0, cpu, 5) == 5
    assert chunk_size(7, 10.5 * unit, per_model, 0, cpu, 100) == 7
    for requested, budget, needle in (
        (20, 10.5, "over the memory budget"),
        (None, 0.5, "one model needs"),
        (0, 10.5, "at least 1"),
        (None, -1.0, "positive"),
    ):
        with pytest.raises(FlatprivError, match=needle):
            chunk_size(requested, budget * unit, per_model, 0, cpu, 100)
    argv = [x for o in TINY + ["train.epochs=1"] for x in ("--set", o)]
    budget = str((3.5 * per_model + per_chunk) / GIB)
    assert main(["pool", *argv, "--models", "5", "--memory-budget", budget, "--out", str(tmp_path), "--json"]) == 0
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    assert json.loads((run / "pool.json").read_text())["chunk_size"] == 3
    assert sorted(p.name for p in (run / "chunks").iterdir()) == ["chunk-0000.npz", "chunk-0001.npz"]
    assert main(["pool", *argv, "--models", "5", "--memory-budget", "1e-6", "--out", str(tmp_path / "bad")]) == 2
    assert "one model needs" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_ray_tasks_reserve_a_chunks_memory():
    from flatpriv.pools.run import ray_memory

    pool = {"chunk_size": 4, "memory_estimate_mib": {"per_model": 10.0, "per_chunk": 24.0}}
    nodes = [{"Alive": True, "Resources": {"memory": 2**30}}, {"Alive": False, "Resources": {"memory": 2**40}}]
    assert ray_memory(pool, nodes) == {"memory": 64 * 2**20}
    assert ray_memory({"chunk_size": 4}, nodes) == {}  # a pool from before the estimate existed
    with pytest.raises(FlatprivError, match="more than any Ray node offers"):
        ray_memory(dict(pool, chunk_size=200), nodes)  # 2024 MiB > the one live node's 1 GiB


@pytest.mark.parametrize("vectorized", [False, True])
def test_cnn_pool_equals_separate_runs_vmapped_or_one_model_at_a_time(tmp_path, monkeypatch, vectorized):
    """On a CPU a CNN pool steps one model at a time (pool_steps.vmap_models); forcing the vmap must give the
    same models. VaSSO carries per-model state through both paths; Bernoulli masks give different step counts."""
    import flatpriv.pools.plain as pool_module

    monkeypatch.setattr(pool_module, "vmap_models", lambda model, device: vectorized)
    over = TINY + [
        "model.name=cnn2d",
        "model.width=8",
        "algorithm=vasso",
        "sharpness.rho=0.2",
        "sharpness.theta=0.5",
        "train.batch_size=32",
    ]
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=30, mode="bernoulli")
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    assert_pool_matches_single_runs(pooled, over, keep, tmp_path)


def test_a_new_dp_row_trains_as_a_single_run_and_a_pool(tmp_path, monkeypatch):
    """A DP row added to the table alone (DP-SAT along twice the radius, with two releases: its ascent takes a fresh
    release) trains in a single run and in a pool, equal to each other, with its releases counted."""
    from flatpriv.step import ALGORITHMS, Algorithm
    from flatpriv.step.ascent import Ascent
    from flatpriv.step.transforms import normalize

    row = Algorithm(
        "dpsam_wide",
        "test row",
        kind="dp",
        dp_ascent=lambda c: Ascent(normalize(radius=2 * c.sharpness.rho), source="current"),
    )
    monkeypatch.setitem(ALGORITHMS, row.name, row)
    over = [
        "train.epochs=1",
        f"algorithm={row.name}",
        "privacy.noise_multiplier=1.0",
        "privacy.noise_seed=3",
        "train.batch_size=64",
        "sharpness.rho=0.1",
    ]
    cfg, _ = resolve(overrides=TINY + over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(2, len(data.y_train), 0.5, seed=2)
    pooled = train_models(cfg, data, keep, seeds=[5, 6])
    singles = assert_pool_matches_single_runs(pooled, TINY + over, keep, tmp_path, seeds=(5, 6), noise_seed=3)
    for k, s in enumerate(singles):
        assert s["releases"] == pooled["releases"][k] == 2 * s["steps"]


def test_a_resumed_pool_counts_every_process_time(tmp_path, monkeypatch):
    """The summary's wall_seconds of a resumed pool includes the chunks trained before the interruption."""
    cfg, _ = resolve(overrides=TINY + ["train.epochs=1"])
    interrupt_after(monkeypatch, pool_run, "save_chunk", 1)
    part = train_pool(cfg, 4, chunk_size=2, out=tmp_path, quiet=True)
    assert part["finished"] is False
    first = json.loads((Path(part["run_dir"]) / "pool.json").read_text())["elapsed"]
    assert first > 0
    done = resume_pool(part["run_dir"], quiet=True)
    assert done["finished"] is True and done["wall_seconds"] >= first
    assert json.loads((Path(part["run_dir"]) / "pool.json").read_text())["elapsed"] >= first
