"""Hostile and careless input (issue 15): files from someone else's run directory never run code, corrupt or
foreign files give one line and exit code 2, and nothing is created under --out when the input is refused."""

from __future__ import annotations

import importlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, interrupt_after

from flatpriv.cli import main

train_module = importlib.import_module("flatpriv.train")  # the module itself (flatpriv.train is also a function)

ARGV = [x for o in TINY + ["train.epochs=1"] for x in ("--set", o)]


class Payload:
    """Unpickling this writes a marker file: the proof that a full unpickle would run code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_refusal(code: int, err: str, fragment: str = "") -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and fragment in err, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run stopped after its first epoch (resumable), the same run finished, and a finished pool with weights."""
    from flatpriv.config_io import resolve
    from flatpriv.pools import train_pool
    from flatpriv.train import train

    root = tmp_path_factory.mktemp("runs")
    cfg, _ = resolve(overrides=TINY)
    with pytest.MonkeyPatch.context() as mp:
        interrupt_after(mp, train_module, "_save_checkpoint", 1)
        part = Path(train(cfg, out=root, quiet=True)["run_dir"])
    done = Path(train(cfg, out=root, quiet=True)["run_dir"])
    one_epoch, _ = resolve(overrides=TINY + ["train.epochs=1"])
    pool = Path(train_pool(one_epoch, 5, out=root, quiet=True, save_weights=True)["run_dir"])
    return {"part": part, "done": done, "pool": pool}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_pickle_payload_in_a_checkpoint_or_model_pt_never_runs(runs, tmp_path, capsys):
    marker = tmp_path / "marker"
    # The payload is real: a full unpickle runs it (this is what torch.load(weights_only=False) did on resume).
    torch.save({"x": Payload(marker)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    part = _copy(runs["part"], tmp_path / "part")
    ckpt = torch.load(part / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "elapsed": Payload(marker)}, part / "checkpoint.pt")
    _one_line_refusal(*_cli(capsys, "train", "--resume", str(part))[::2], "checkpoint.pt")

    done = _copy(runs["done"], tmp_path / "done")
    torch.save({"w": Payload(marker)}, done / "model.pt")
    _one_line_refusal(*_cli(capsys, "curvature", str(done), "--out", str(tmp_path / "c"))[::2], "model.pt")
    assert not marker.exists() and not (tmp_path / "c").exists()


def test_a_pickled_array_in_a_pool_is_refused_by_every_analysis_and_resume(runs, tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = np.array([Payload(marker)], dtype=object)
    for target, commands in (
        ("arrays/train_logits.npy", (["memorization"], ["attack"], ["curvature"])),
        ("chunks/chunk-0000.npz", (["curvature"],)),
    ):
        pool = _copy(runs["pool"], tmp_path / target.replace("/", "_"))
        if target.endswith(".npz"):
            z = dict(np.load(pool / target))
            np.savez(pool / target, **{**z, "param/0.weight": hostile})
        else:
            np.save(pool / target, hostile, allow_pickle=True)
        for cmd in commands:
            _one_line_refusal(*_cli(capsys, *cmd, str(pool), "--out", str(tmp_path / "out"))[::2], "corrupt")
    # an unfinished pool whose keep mask was replaced: resume refuses it before training anything
    pool = _copy(runs["pool"], tmp_path / "resume")
    (pool / "summary.json").unlink()
    np.save(pool / "arrays" / "keep.npy", hostile, allow_pickle=True)
    _one_line_refusal(*_cli(capsys, "pool", "--resume", str(pool))[::2], "keep.npy")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_corrupt_and_foreign_files_give_one_line(runs, tmp_path, capsys):
    part = _copy(runs["part"], tmp_path / "part")
    raw = (part / "checkpoint.pt").read_bytes()
    (part / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])  # truncated
    _one_line_refusal(*_cli(capsys, "train", "--resume", str(part))[::2], "checkpoint.pt")
    torch.save({"epoch": 1}, part / "checkpoint.pt")  # plain tensors, but not this run's checkpoint
    _one_line_refusal(*_cli(capsys, "train", "--resume", str(part))[::2], "checkpoint.pt")
    done = _copy(runs["done"], tmp_path / "done")
    (done / "model.pt").write_bytes(b"not a zip file at all")
    _one_line_refusal(*_cli(capsys, "curvature", str(done), "--out", str(tmp_path / "c"))[::2], "model.pt")
    (done / "config.json").write_bytes(b'{"seed": "\xff\xfe"}')  # decoding error
    _one_line_refusal(*_cli(capsys, "curvature", str(done), "--out", str(tmp_path / "c"))[::2], "UTF-8")
    (done / "config.json").write_text(json.dumps([1, 2]))
    _one_line_refusal(*_cli(capsys, "curvature", str(done), "--out", str(tmp_path / "c"))[::2], "config")
    toml = tmp_path / "bad.toml"
    toml.write_bytes(b"seed = 1\n# \xff\xfe\n")
    _one_line_refusal(*_cli(capsys, "train", "--config", str(toml), "--out", str(tmp_path / "c"))[::2], "UTF-8")
    assert not (tmp_path / "c").exists()


def test_unwritable_out_gives_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # --out below a regular file: the OS refuses to create it (the same path an unwritable or full disk takes)
    _one_line_refusal(*_cli(capsys, "train", *ARGV, "--out", str(blocker / "runs"))[::2], str(blocker))
    assert blocker.read_text() == "x"  # nothing was written in its place


def _numeric_keys() -> list[tuple[str, type]]:
    """Every int, float and float-pair setting of the config, read off the dataclasses themselves."""
    import dataclasses
    import typing

    from flatpriv.config import Config

    keys = []
    for f in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[f.name]
        if dataclasses.is_dataclass(cls):
            for g, typ in typing.get_type_hints(cls).items():
                if typ in (int, float) or typing.get_origin(typ) is tuple:
                    keys.append((f"{f.name}.{g}", typ))
        elif cls in (int, float):
            keys.append((f.name, cls))
    return keys


# Settings for which 0 is meaningless (every numeric setting refuses a negative, except noise_seed's -1).
ZERO_INVALID = {
    "data.num_samples",
    "data.num_classes",
    "data.dim",
    "data.typical_per_class",
    "data.rare_size",
    "data.test_per_class",
    "data.separation",
    "model.width",
    "model.groups",
    "optim.lr",
    "sharpness.theta",
    "privacy.delta",
    "privacy.clip_norm",
    "train.epochs",
    "train.curvature_probes",
    "train.batch_size",
    "train.eval_batch_size",
}


def test_every_numeric_setting_refuses_nan_inf_huge_and_invalid_values(tmp_path, capsys):
    keys = _numeric_keys()
    assert len(keys) > 35 and ("privacy.target_epsilon", float) in keys
    out = tmp_path / "runs"
    for key, typ in keys:
        bad = ["nan", "inf", "-inf", "-2" if key == "privacy.noise_seed" else "-1"]
        if key in ZERO_INVALID:
            bad.append("0")
        if typ is int:  # every integer has an upper bound: a huge count would hang or exhaust memory
            bad += [str(10**12), str(2**64)]
        for v in bad:
            value = f"[{v}, 0.999]" if typing_is_tuple(typ) else v
            code, _, err = _cli(capsys, "train", *ARGV, "--set", f"{key}={value}", "--out", str(out))
            assert code == 2 and err.count("\n") == 1 and key in err and "Traceback" not in err, (key, v, err)
    assert not out.exists()


def typing_is_tuple(typ: type) -> bool:
    import typing

    return typing.get_origin(typ) is tuple


@pytest.mark.parametrize(
    "argv",
    [
        ["pool", "--models", "4", "--keep", "nan"],
        ["pool", "--models", "4", "--memory-budget", "nan"],
        ["pool", "--models", "4", "--memory-budget", "inf"],
        ["curvature", "RUN", "--h=-inf"],
        ["privacy", "epsilon", "--noise-multiplier", "nan", "--sample-rate", "0.1", "--steps", "10"],
        ["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "inf", "--steps", "10"],
        ["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "nan"],
        ["privacy", "calibrate", "--target-epsilon", "inf", "--sample-rate", "0.1", "--steps", "10"],
    ],
)
def test_float_options_refuse_non_finite_values(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        out = [] if argv[0] == "privacy" else ["--out", str(tmp_path / "o")]
        main([tmp_path.as_posix() if a == "RUN" else a for a in argv] + out)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finite" in err and not (tmp_path / "o").exists()


def test_calibration_and_accounting_refuse_what_they_cannot_compute_at_once(tmp_path, capsys):
    from flatpriv.errors import FlatprivError
    from flatpriv.privacy.accounting import calibrate_noise, epsilon

    for target in (math.inf, 1e9):  # both searched σ → 0 for ever
        with pytest.raises(FlatprivError, match="target_epsilon"):
            calibrate_noise(target, 0.05, 100, 1e-5)
    with pytest.raises(FlatprivError, match="noise_multiplier"):
        epsilon(1e300, 0.05, 100, 1e-5)  # overflowed inside dp-accounting
    with pytest.raises(FlatprivError, match="rdp"):
        epsilon(0.01, 0.05, 100, 1e-5, "pld")  # the PLD grid never finished
    assert epsilon(0.01, 0.05, 100, 1e-5, "rdp") > 1e3  # RDP copes, and says how little such noise protects
    code, _, err = _cli(
        capsys, "privacy", "calibrate", "--target-epsilon", "1e9", "--sample-rate", "0.05", "--steps", "100"
    )
    _one_line_refusal(code, err, "target_epsilon")
    out = tmp_path / "runs"
    for extra in (
        ["privacy.target_epsilon=1e9"],
        ["privacy.noise_multiplier=0.01"],
        ["privacy.noise_multiplier=1e300"],
    ):
        argv = [x for o in ["algorithm=dpsgd", *extra] for x in ("--set", o)]
        _one_line_refusal(
            *_cli(capsys, "train", *ARGV, *argv, "--out", str(out))[::2],
            "noise_multiplier" if "noise" in extra[0] else "target_epsilon",
        )
    assert not out.exists()


def _strict_json(path: Path) -> object:
    """Parse as a strict parser would: the bare words NaN and Infinity are not JSON."""

    def refuse(word: str) -> None:
        raise ValueError(f"{path}: non-standard JSON constant {word}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    from flatpriv import results

    obj = {"a": float("nan"), "b": [np.inf, 1.5], "c": np.float32("nan"), "d": np.array([-np.inf, 2.0])}
    results.write_json(tmp_path / "x.json", obj)
    results.append_jsonl(tmp_path / "x.jsonl", obj)
    expected = {"a": None, "b": [None, 1.5], "c": None, "d": [None, 2.0]}
    assert _strict_json(tmp_path / "x.json") == expected
    assert json.loads((tmp_path / "x.jsonl").read_text(), parse_constant=float) == expected
    assert json.loads(results.dumps(obj)) == expected


def test_a_diverging_run_stops_with_one_line_and_stays_resumable(runs, tmp_path, capsys, monkeypatch):
    import flatpriv.train as train_module
    from flatpriv.config_io import resolve

    out = tmp_path / "runs"
    code, _, err = _cli(capsys, "train", *ARGV, "--set", "optim.lr=1e6", "--out", str(out))
    _one_line_refusal(code, err, "diverged")
    assert "epoch 1, step " in err
    (run,) = out.iterdir()
    assert not (run / "summary.json").exists() and not (run / "metrics.jsonl").exists()
    for f in run.glob("*.json"):
        _strict_json(f)

    # A NaN loss in epoch 2, step 3 of 22: the run stops there and keeps epoch 1, and resuming finishes it exactly.
    cfg, _ = resolve(overrides=TINY)
    full = json.loads((runs["done"] / "summary.json").read_text())
    real, calls = train_module.take_step, []

    def poisoned(*args):
        state, loss = real(*args)
        calls.append(1)
        return state, loss * float("nan") if len(calls) == 22 + 3 else loss

    monkeypatch.setattr(train_module, "take_step", poisoned)
    with pytest.raises(Exception, match="non-finite loss at epoch 2, step 25") as e:
        train_module.train(cfg, out=tmp_path / "part", quiet=True)
    assert type(e.value).__name__ == "FlatprivError"
    monkeypatch.setattr(train_module, "take_step", real)
    (part,) = (tmp_path / "part").iterdir()
    assert [json.loads(x)["epoch"] for x in (part / "metrics.jsonl").read_text().splitlines()] == [1]
    done = train_module.resume(part, quiet=True)
    assert done["test_accuracy"] == full["test_accuracy"] and done["steps"] == full["steps"]


def test_a_diverging_pool_says_so_and_pool_logits_are_float32(runs, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = _cli(capsys, "pool", *ARGV, "--set", "optim.lr=1e6", "--models", "4", "--out", str(out))
    _one_line_refusal(code, err, "diverged")
    assert not list(out.glob("*/chunks/*.npz"))
    pool = _copy(runs["pool"], tmp_path / "pool")
    logits = np.load(pool / "arrays" / "train_logits.npy")
    assert logits.dtype == np.float32
    np.save(pool / "arrays" / "train_logits.npy", logits * 1e5)  # finite, but beyond float16's 65504
    code, _, err = _cli(capsys, "memorization", str(pool), "--out", str(tmp_path / "m"))
    assert code == 0, err


@pytest.mark.parametrize(
    "key, value",
    [
        ("privacy.target_epsilon", 0.5),
        ("train.epochs", 5),
        ("train.batch_size", 32),
        ("algorithm", "dpsgd"),
        ("privacy.accountant", "rdp"),
    ],
)
def test_resume_refuses_an_edited_config_naming_the_key(runs, tmp_path, capsys, key, value):
    part = _copy(runs["part"], tmp_path / "part")
    cfg = json.loads((part / "config.json").read_text())
    section, _, name = key.rpartition(".")
    (cfg[section] if section else cfg)[name] = value
    (part / "config.json").write_text(json.dumps(cfg))
    before = (part / "metrics.jsonl").read_text()
    _one_line_refusal(*_cli(capsys, "train", "--resume", str(part))[::2], key)
    assert (part / "metrics.jsonl").read_text() == before


def test_resume_is_never_stuck_and_a_second_writer_is_refused(runs, tmp_path, capsys, monkeypatch):
    import flatpriv.train as train_module
    from flatpriv import results

    part = _copy(runs["part"], tmp_path / "part")
    with results.locked(part):  # another process resuming the same run
        _one_line_refusal(*_cli(capsys, "train", "--resume", str(part))[::2], "in use")
    with open(part / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 44, "tes')  # killed in the middle of an append

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_finish", killed)  # ... and killed again during the final writes
    stopped = train_module.resume(part, quiet=True)  # Ctrl-C is caught: the run says where it can resume
    assert stopped["finished"] is False and stopped["interrupted_after_epoch"] == 2
    monkeypatch.undo()
    assert not (part / "summary.json").exists() and (part / "checkpoint.pt").exists()
    done = train_module.resume(part, quiet=True)
    full = json.loads((runs["done"] / "summary.json").read_text())
    assert (done["test_accuracy"], done["steps"]) == (full["test_accuracy"], full["steps"])
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 2
    for a, b in zip(torch.load(part / "model.pt").values(), torch.load(runs["done"] / "model.pt").values()):
        assert torch.equal(a, b)


def test_pool_resume_retrains_a_truncated_chunk_and_refuses_edits(runs, tmp_path, capsys):
    from flatpriv import results

    pool = _copy(runs["pool"], tmp_path / "pool")
    (pool / "summary.json").unlink()
    (chunk,) = (pool / "chunks").glob("*.npz")
    chunk.write_bytes(chunk.read_bytes()[:1000])
    _one_line_refusal(*_cli(capsys, "pool", "--resume", str(pool), "--set", "optim.lr=1")[::2], "--set")
    with results.locked(pool):
        _one_line_refusal(*_cli(capsys, "pool", "--resume", str(pool))[::2], "in use")
    cfg = json.loads((pool / "config.json").read_text())
    (pool / "config.json").write_text(json.dumps({**cfg, "seed": 3}))
    _one_line_refusal(*_cli(capsys, "pool", "--resume", str(pool))[::2], "config.json was changed")
    (pool / "config.json").write_text(json.dumps(cfg))
    code, _, err = _cli(capsys, "pool", "--resume", str(pool), "--quiet")
    assert code == 0 and "training that chunk again" in err
    for name in ("train_logits", "test_logits"):
        a, b = np.load(pool / "arrays" / f"{name}.npy"), np.load(runs["pool"] / "arrays" / f"{name}.npy")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_weak_or_odd_privacy_settings_are_refused_or_said(tmp_path, capsys):
    from flatpriv.config_io import resolve
    from flatpriv.privacy.privatizer import setup_privacy
    from flatpriv.step import get_algorithm

    out = tmp_path / "runs"
    dp = ["--set", "algorithm=dpsgd", "--set", "privacy.noise_multiplier=1"]
    for extra, fragment in (
        (["--set", "privacy.delta=0.01"], "allow_large_delta"),  # 1/N = 1/1347
        (["--set", "privacy.sample_rate=1e-6"], "expected batch"),
        (["--preset", "../../../etc/passwd"], "no preset named"),
    ):
        _one_line_refusal(*_cli(capsys, "train", *ARGV, *dp, *extra, "--out", str(out))[::2], fragment)
    assert not out.exists()
    cfg, _ = resolve(overrides=TINY + ["algorithm=dpsgd", "privacy.noise_multiplier=1", "privacy.delta=0.01"])
    with pytest.raises(Exception, match="allow_large_delta"):
        setup_privacy(cfg, get_algorithm("dpsgd"), 1347, torch.device("cpu"))
    cfg, _ = resolve(
        overrides=TINY
        + ["algorithm=dpsgd", "privacy.noise_multiplier=1", "privacy.delta=0.01"]
        + ["privacy.allow_large_delta=true"]
    )
    assert setup_privacy(cfg, get_algorithm("dpsgd"), 1347, torch.device("cpu")).delta == 0.01
    code, stdout, err = _cli(capsys, "train", *ARGV, *dp, "--out", str(out), "--quiet")
    assert code == 0, err
    summary = json.loads(next(out.iterdir()).joinpath("summary.json").read_text())
    assert f"epsilon = {summary['epsilon']:.4f} at delta = 1e-05; PLD accountant" in stdout


def test_attack_minimum_pool_size_is_one_number_checked_before_work(runs, tmp_path, capsys):
    from flatpriv.analyses.attack import MIN_MODELS

    small = _copy(runs["pool"], tmp_path / "small")
    for name in ("keep", "train_logits", "test_logits"):
        a = np.load(small / "arrays" / f"{name}.npy")
        np.save(small / "arrays" / f"{name}.npy", a[: MIN_MODELS - 1])
    code, _, err = _cli(capsys, "attack", str(small), "--bootstrap", "5", "--out", str(tmp_path / "a"))
    _one_line_refusal(code, err, f"at least {MIN_MODELS} models")
    assert not (tmp_path / "a").exists()
    code, _, err = _cli(capsys, "attack", str(runs["pool"]), "--bootstrap", "5", "--out", str(tmp_path / "a"))
    assert code == 0 and MIN_MODELS == 5, err
