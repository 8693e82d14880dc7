"""Hostile and careless input (issue 15), continued: the secure noise source, data files, full or read-only disks,
pool resume options, and integers too large to run."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    # Fixed thresholds: a correct source fails each with probability 1e-6 (KS) or ~1e-9 (moments). The draws are
    # the OS's, never seeded: at the former 1e-4 a correct source fails the suite about once in 5000 runs (the
    # test failed once on 2026-12-03 and passed 150 reruns). A p-value below 1e-6 is a broken source.
    assert stats.kstest(draws, "norm").pvalue > 1e-6
    assert abs(draws.mean()) < 6 / np.sqrt(len(draws)) and abs(draws.var() - 1) < 6 * np.sqrt(2 / len(draws))
    assert stats.kstest(src.uniform(100_000), "uniform").pvalue > 1e-6
    # The test can fail: a rescaled or shifted normal is far below the threshold (p < 1e-29 at 100 001 draws).
    assert stats.kstest(draws * 1.1, "norm").pvalue < 1e-6 and stats.kstest(draws + 0.05, "norm").pvalue < 1e-6

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


# --- image files from data.root --------------------------------------------------------------------------------


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes() + arr.astype(np.uint8).tobytes()


def _mnist(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10))
    return raw


def _cifar(root: Path, labels: list[int]) -> None:
    import pickle

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = np.zeros((len(labels), 3072), dtype=np.uint8)
        with (base / name).open("wb") as f:
            pickle.dump({b"data": x, b"labels": labels}, f, protocol=2)


def test_bad_idx_headers_and_out_of_range_labels_give_one_line(tmp_path, capsys):
    from flatpriv.config import DataConfig
    from flatpriv.data import load_data

    raw = _mnist(tmp_path / "ok")
    assert len(load_data(DataConfig(name="mnist", root=str(tmp_path / "ok"))).y_train) == 30  # the files are valid
    out = tmp_path / "runs"
    images = (raw / "train-images-idx3-ubyte").read_bytes()
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()
    cases = {
        "more dimensions than the file holds": ("train-images-idx3-ubyte", images[:3] + bytes([200]) + images[4:20]),
        "a negative dimension": ("train-images-idx3-ubyte", images[:4] + np.int32(-30).astype(">i4").tobytes()),
        "dimensions whose product wraps around int64": (
            "train-images-idx3-ubyte",
            bytes([0, 0, 8, 3]) + np.array([2**31 - 1] * 3, dtype=">i4").tobytes() + images[16:],
        ),
        "float pixels": ("train-images-idx3-ubyte", images[:2] + bytes([0x0D]) + images[3:]),
        "a label 10": ("train-labels-idx1-ubyte", labels[:-1] + bytes([10])),
        "a label 255": ("t10k-labels-idx1-ubyte", _idx(np.full(10, 255))),
        "no examples": ("train-labels-idx1-ubyte", _idx(np.zeros(0))),
        "a header only": ("train-images-idx3-ubyte", images[:4]),
    }
    for what, (name, blob) in cases.items():
        root = tmp_path / what.replace(" ", "_")
        _mnist(root)
        if what == "no examples":
            (root / "MNIST/raw/train-images-idx3-ubyte").write_bytes(_idx(np.zeros((0, 28, 28))))
        (root / "MNIST" / "raw" / name).write_bytes(blob)
        argv = ["train", "--set", "data.name=mnist", "--set", f"data.root={root}", "--set", "train.epochs=1"]
        code, _, err = _cli(capsys, *argv, "--out", str(out))
        _one_line_refusal(code, err, "data.root")
        assert name.split("-")[0] in err or "MNIST" in err, (what, err)
    for bad in ([0, 10], [-1, 3], [2**70, 1]):  # CIFAR-10 labels out of 0..9, and one too large for int64
        _cifar(tmp_path / f"cifar{bad[0]}", bad)
        argv = ["train", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / f'cifar{bad[0]}'}"]
        _one_line_refusal(*_cli(capsys, *argv, "--out", str(out))[::2], "data_batch_1")
    assert not out.exists()


# --- a full disk, a read-only --out -------------------------------------------------------------------------


def _disk_full(monkeypatch: pytest.MonkeyPatch, full_from: Callable[[str], bool]) -> None:
    """Every file flatpriv writes (JSON, arrays, checkpoints, model.pt, chunks) goes through ``open`` in
    flatpriv.results; from the first path for which ``full_from`` is true on, that open gets /dev/full, whose writes
    fail with ENOSPC exactly as a full disk's do. The lock file is left alone: it is flock-ed (which /dev/full
    refuses) and holds a few bytes, which a full disk's last free block takes."""
    from flatpriv import results

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    real, full = open, [False]

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and not str(file).endswith(".lock"):
            full[0] = full[0] or full_from(str(file))
            if full[0]:
                return real("/dev/full", mode.replace("x", "w"), *args, **kwargs)
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(results, "open", opener, raising=False)


def _nth(fragment: str, n: int) -> Callable[[str], bool]:
    seen = [0]

    def hit(path: str) -> bool:
        seen[0] += fragment in path
        return seen[0] >= n

    return hit


def test_a_full_disk_gives_one_line_and_keeps_only_what_can_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    out.mkdir()
    argv = _sets(TINY)
    with pytest.MonkeyPatch.context() as mp:  # full from the start: nothing of the run is left
        _disk_full(mp, lambda p: True)
        for cmd in (["train"], ["pool", "--models", "2"]):
            _one_line_refusal(*_cli(capsys, *cmd, *argv, "--out", str(out))[::2], "No space left on device")
            assert list(out.iterdir()) == []
    with pytest.MonkeyPatch.context() as mp:  # full at the second epoch's checkpoint: epoch 1 is kept
        _disk_full(mp, _nth("checkpoint.pt", 2))
        code, _, err = _cli(capsys, "train", *argv, "--out", str(out))
    _one_line_refusal(code, err, "No space left on device")
    (run,) = out.iterdir()
    assert f"continue with `flatpriv train --resume {run}`" in err and "checkpoint.pt" in err
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock") == []
    # once there is room again the run resumes, and ends as the run the disk never interrupted
    code, _, err = _cli(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 0, err
    code, _, err = _cli(capsys, "train", *argv, "--out", str(tmp_path / "ref"), "--quiet")
    (ref,) = (tmp_path / "ref").iterdir()
    for a, b in zip(_weights(run).values(), _weights(ref).values()):
        assert torch.equal(a, b)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    # an analysis stopped by a full disk leaves no directory either
    with pytest.MonkeyPatch.context() as mp:
        _disk_full(mp, lambda p: "summary.json" in p)
        code, _, err = _cli(capsys, "curvature", str(run), "--probes", "1", "--out", str(tmp_path / "c"))
    _one_line_refusal(code, err, "summary.json: No space left on device")
    assert list((tmp_path / "c").iterdir()) == []


def test_a_read_only_out_gives_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import os

    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:  # a real read-only directory (root writes through permission bits)
        out.chmod(0o555)
        try:
            _one_line_refusal(*_cli(capsys, "train", *_sets(TINY), "--out", str(out))[::2], "Permission denied")
        finally:
            out.chmod(0o755)
    real = Path.mkdir

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:  # what mkdir(2) says on a read-only mount
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    for cmd in (["train"], ["pool", "--models", "2"]):
        code, _, err = _cli(capsys, *cmd, *_sets(TINY), "--out", str(out / "sub"))
        _one_line_refusal(code, err, "Read-only file system")
        assert str(out / "sub") in err
    assert list(out.iterdir()) == []


# --- pool --resume options ------------------------------------------------------------------------------------


def test_pool_resume_refuses_every_option_that_pool_json_fixes(tmp_path, capsys):
    from flatpriv.config_io import resolve
    from flatpriv.pools import train_pool

    cfg, _ = resolve(overrides=TINY + ["train.epochs=1"])
    pool = Path(train_pool(cfg, 2, out=tmp_path, quiet=True)["run_dir"])
    (pool / "summary.json").unlink()  # unfinished: its chunks are saved, the final arrays not yet
    before = sorted(p.name for p in pool.rglob("*"))
    for option in (
        ["--models", "8"],
        ["--keep", "0.9"],
        ["--keep-mode", "bernoulli"],
        ["--chunk-size", "1"],
        ["--memory-budget", "0.5"],
        ["--save-weights"],
        ["--canaries", "0"],
    ):
        code, _, err = _cli(capsys, "pool", "--resume", str(pool), *option)
        _one_line_refusal(code, err, f"drop {option[0]}")
    code, _, err = _cli(capsys, "pool", "--resume", str(pool), "--models", "8", "--keep", "0.9")
    _one_line_refusal(code, err, "drop --models/--keep")
    assert sorted(p.name for p in pool.rglob("*")) == before  # nothing was touched
    code, out, err = _cli(capsys, "pool", "--resume", str(pool), "--quiet")
    assert code == 0 and "pool of 2 sgd models" in out, err


# --- integers too large to run -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["pool", "--models", "HUGE"],
        ["pool", "--chunk-size", "HUGE"],
        ["pool", "--canaries", "HUGE"],
        ["memorization", "RUN", "--buckets", "HUGE"],
        ["attack", "RUN", "--bootstrap", "HUGE"],
        ["attack", "RUN", "--seed", "HUGE"],
        ["curvature", "RUN", "--probes", "HUGE"],
        ["curvature", "RUN", "--seed", "HUGE"],
        ["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "HUGE"],
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "9",
            "--releases-per-step",
            "HUGE",
        ],
        ["privacy", "calibrate", "--target-epsilon", "1", "--sample-rate", "0.1", "--steps", "HUGE"],
    ],
)
def test_integer_options_refuse_huge_values(argv, tmp_path, capsys):
    out = [] if argv[0] == "privacy" else ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main([str(10**12) if a == "HUGE" else tmp_path.as_posix() if a == "RUN" else a for a in argv] + out)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most" in err and argv[argv.index("HUGE") - 1] in err, err
    assert not (tmp_path / "o").exists()


def test_bounded_settings_whose_product_is_too_large_are_refused_before_anything_is_written(tmp_path, capsys):
    out, images = tmp_path / "runs", tmp_path / "images"
    _mnist(images)
    for overrides, fragment in (
        (["model.width=65536", "model.depth=64"], "parameters"),  # each within its bound, the MLP is 2.7e11
        (["model.name=resnet", "data.name=mnist", f"data.root={images}", "model.depth=40"], "channels"),
        (["data.name=synthetic-longtail", "data.num_classes=1000", "data.dim=100000"], "numbers"),
        # 25 000 DP steps per epoch for 100 000 epochs: more releases than the accountant can compose
        (
            ["data.name=synthetic-longtail", "data.num_classes=1000", "data.typical_per_class=20"]
            + ["algorithm=dpsgd", "privacy.noise_multiplier=1", "privacy.sample_rate=4e-5", "train.epochs=100000"],
            "steps",
        ),
    ):
        argv = _sets(["model.width=32", "model.depth=1", *overrides])
        _one_line_refusal(*_cli(capsys, "train", *argv, "--out", str(out))[::2], fragment)
    assert not out.exists()
    from flatpriv.config import ModelConfig
    from flatpriv.models import MLP, build_model

    cfg = ModelConfig(width=32, depth=1)
    torch.manual_seed(0)
    direct, after_direct = MLP(cfg, (64,), 10).state_dict(), torch.rand(3)
    torch.manual_seed(0)
    checked, after_checked = build_model(cfg, (64,), 10).state_dict(), torch.rand(3)
    # the size check builds the model on the meta device first: the weights and the random state are untouched
    assert all(torch.equal(a, b) for a, b in zip(direct.values(), checked.values()))
    assert torch.equal(after_direct, after_checked)
