"""Hostile and careless input (issue 15): files from someone else's run directory never run code, corrupt or
foreign files give one line and exit code 2, and nothing is created under --out when the input is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from flatpriv.cli import main

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
    """A run stopped after its first epoch (resumable), a finished run, and a finished pool with its weights."""
    from flatpriv.config_io import resolve
    from flatpriv.pools import train_pool
    from flatpriv.train import train

    root = tmp_path_factory.mktemp("runs")
    cfg, _ = resolve(overrides=TINY)
    part = Path(train(cfg, out=root, quiet=True, stop_after_epoch=1)["run_dir"])
    done = Path(train(cfg, out=root, quiet=True)["run_dir"])
    pool = Path(train_pool(cfg, 5, out=root, quiet=True, save_weights=True)["run_dir"])
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
