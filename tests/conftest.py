from __future__ import annotations

import pytest
import torch

# Two cores: more intra-op threads than that only thrash when pytest runs beside other work.
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = ["data.name=digits", "model.width=32", "model.depth=1", "train.epochs=2", "train.batch_size=64"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated data sets go to a per-session cache, never the user's."""
    monkeypatch.setenv("FLATPRIV_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def assert_pool_matches_single_runs(
    pooled: dict, overrides: list[str], keep, tmp_path, seeds=(5, 6, 7), noise_seed: int | None = None
) -> list[dict]:
    """Pool model k trained again as its own ``flatpriv train`` run (seed seeds[k], on the positions keep[k], noise
    seed noise_seed + 2k when given) ends with the pool's weights to 1e-5. Returns the single runs' summaries."""
    from pathlib import Path

    import numpy as np

    from flatpriv.config_io import resolve
    from flatpriv.train import train

    summaries = []
    for k, seed in enumerate(seeds):
        extra = [f"seed={seed}"] + ([f"privacy.noise_seed={noise_seed + 2 * k}"] if noise_seed is not None else [])
        single, _ = resolve(overrides=overrides + extra)
        s = train(single, out=tmp_path, quiet=True, subset=torch.as_tensor(np.flatnonzero(keep[k])))
        weights = torch.load(Path(s["run_dir"]) / "model.pt", weights_only=True)
        for name, w in weights.items():
            torch.testing.assert_close(pooled["params"][name][k], w, atol=1e-5, rtol=1e-4)
        summaries.append(s)
    return summaries


def interrupt_after(monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: int) -> None:
    """Ctrl-C as a user would press it: ``module.name`` raises KeyboardInterrupt once, right after its
    ``calls``-th call returns (train's epoch checkpoint, a pool's chunk save), then behaves normally again."""
    real = getattr(module, name)
    count = [0]

    def wrapped(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(module, name, wrapped)


def interrupt_pools(monkeypatch: pytest.MonkeyPatch, at: int) -> list[str]:
    """Record the name of every pool a study trains (``flatpriv.studies.stages.train_pool``), and stop the study
    once with Ctrl-C in place of the ``at``-th pool; returns the list the names are appended to."""
    import flatpriv.studies.stages as stages

    trained: list[str] = []
    real = stages.train_pool
    interrupted: list[bool] = []

    def counting(cfg, n, **kw):
        trained.append(kw["name"])
        if len(trained) == at and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return real(cfg, n, **kw)

    monkeypatch.setattr(stages, "train_pool", counting)
    return trained


def assert_refused_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture, out) -> None:
    """The command exits 2 with one line on stderr naming ``message`` and leaves nothing under ``out``."""
    from flatpriv.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(out.iterdir())


class TiedHeadCNN(torch.nn.Module):
    """Conv → GroupNorm → ReLU → global average → a prototype head tied to itself: logit_c = h·w_c − ‖w_c‖²/2
    (= −‖h − w_c‖²/2 + const), so ``head.weight`` is used inside its Linear and again outside it."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, width, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.norm(self.conv(x))), 1).flatten(1)
        return self.head(h) - 0.5 * self.head.weight.square().sum(1)
