"""flatpriv.fit and flatpriv.Step: the README's two examples on a model flatpriv does not ship, fit against the
config path (same weights, same ε), resume, refusals, and Step against the ledger and a hand-written step."""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TiedHeadCNN, interrupt_after
from torch import nn

import flatpriv
from flatpriv.api import keywords_from_config
from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.errors import FlatprivError
from flatpriv.models import build_model
from flatpriv.privacy import FlatprivWarning
from flatpriv.privacy.accounting import epsilon
from flatpriv.train import train

train_module = importlib.import_module("flatpriv.train")
README = Path(__file__).resolve().parents[1] / "README.md"


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) / 5  # a little signal
    return x, y


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"one README python block with {marker!r}, found {len(found)}"
    return found[0]


def test_readme_examples_run_on_a_tied_head_cnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    (x, y), (x_test, y_test) = _images(300, 1), _images(100, 2)
    ns = {"model": TiedHeadCNN(), "x": x, "y": y, "x_test": x_test, "y_test": y_test}
    with pytest.warns(FlatprivWarning, match="head.weight"):  # the tie is found and vmap takes over
        exec(_readme_block("flatpriv.fit("), ns)
    summary = ns["summary"]
    run = Path(summary["run_dir"])
    assert run.resolve().parent == (tmp_path / "runs").resolve() and summary["finished"]
    assert 2.9 < summary["epsilon"] <= 3.0 and summary["releases"] == summary["steps"] == 15
    for name in ("config.json", "provenance.json", "metrics.jsonl", "summary.json", "privacy_ledger.json", "model.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "user"
    supplied = json.loads((run / "provenance.json").read_text())["user_supplied"]
    assert supplied["model"]["class"].endswith("TiedHeadCNN") and supplied["data"]["train"]["x"] == [300, 1, 8, 8]

    before = {k: v.detach().clone() for k, v in ns["model"].state_dict().items()}
    with pytest.warns(FlatprivWarning, match="head.weight"):
        exec(_readme_block("flatpriv.Step("), ns)
    step = ns["step"]
    assert step.releases == 15 and 2.9 < step.epsilon() <= 3.0
    assert step.epsilon() == pytest.approx(epsilon(step.noise_multiplier, 64 / 300, 15, 1e-5), rel=1e-9)
    assert any(not torch.equal(before[k], v) for k, v in ns["model"].state_dict().items())


def _config_path_run(tmp_path: Path, extra: tuple[str, ...] = ()) -> tuple:
    overrides = [
        "data.name=mnist1d",
        "data.num_samples=600",
        "model.name=mlp",
        "model.width=32",
        "model.depth=1",
        "algorithm=dpsat",
        "train.epochs=2",
        "train.batch_size=64",
        "privacy.noise_multiplier=1.0",
        "privacy.noise_seed=3",
        "privacy.delta=1e-4",
        "optim.lr=0.3",
        "seed=4",
        *extra,
    ]
    cfg, _ = resolve(overrides=overrides)
    return cfg, load_data(cfg.data)


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    return torch.load(Path(summary["run_dir"]) / "model.pt", weights_only=True)


def test_fit_equals_the_config_path_run(tmp_path: Path) -> None:
    cfg, data = _config_path_run(tmp_path)
    ref = train(cfg, out=tmp_path / "config", quiet=True)
    settings = keywords_from_config(cfg)
    pair, test = (data.x_train, data.y_train), (data.x_test, data.y_test)

    def factory() -> nn.Module:
        return build_model(cfg.model, data.input_shape, data.num_classes)

    by_factory = flatpriv.fit(factory, pair, test, algorithm=cfg.algorithm, out=tmp_path / "a", **settings)
    torch.manual_seed(cfg.seed)  # a module built as train() builds it: seeded just before
    module = factory()
    by_module = flatpriv.fit(module, pair, test, algorithm=cfg.algorithm, out=tmp_path / "b", **settings)
    expected = _weights(ref)
    for got in (by_factory, by_module):
        assert got["epsilon"] == ref["epsilon"] and got["steps"] == ref["steps"]
        assert got["test_accuracy"] == pytest.approx(ref["test_accuracy"], abs=1e-6)
        for k, w in _weights(got).items():
            torch.testing.assert_close(w, expected[k], atol=1e-6, rtol=0)
    for k, w in module.state_dict().items():  # fit trained the module itself
        torch.testing.assert_close(w, expected[k], atol=1e-6, rtol=0)
    assert json.loads((Path(by_module["run_dir"]) / "privacy_ledger.json").read_text()) == json.loads(
        (Path(ref["run_dir"]) / "privacy_ledger.json").read_text()
    )


def test_fit_resumes_with_the_same_model_and_data_and_refuses_others(tmp_path: Path, monkeypatch) -> None:
    cfg, data = _config_path_run(tmp_path, ("train.epochs=3",))
    settings = keywords_from_config(cfg)
    pair, test = (data.x_train, data.y_train), (data.x_test, data.y_test)

    def factory() -> nn.Module:
        return build_model(cfg.model, data.input_shape, data.num_classes)

    whole = flatpriv.fit(factory, pair, test, algorithm="dpsat", out=tmp_path / "whole", **settings)
    with monkeypatch.context() as mp:
        interrupt_after(mp, train_module, "_save_checkpoint", 1)
        part = flatpriv.fit(factory, pair, test, algorithm="dpsat", out=tmp_path / "part", **settings)
    assert part["finished"] is False and part["interrupted_after_epoch"] == 1
    run = part["run_dir"]
    other_y = data.y_train.clone()
    other_y[0] = (other_y[0] + 1) % 10
    with pytest.raises(FlatprivError, match=r"data\.train\.sha256") as bad:
        flatpriv.fit(factory, (data.x_train, other_y), test, algorithm="dpsat", resume=run, **settings)
    assert len(str(bad.value).splitlines()) == 1
    with pytest.raises(FlatprivError, match=r"model\.parameters"):
        wider = build_model(cfg.model.__class__(name="mlp", width=16, depth=1), data.input_shape, 10)
        flatpriv.fit(wider, pair, test, algorithm="dpsat", resume=run, **settings)
    with pytest.raises(FlatprivError, match=r"optim\.lr"):
        flatpriv.fit(factory, pair, test, algorithm="dpsat", resume=run, **{**settings, "lr": 0.1})
    with pytest.raises(FlatprivError, match=r"flatpriv\.fit\(model"):  # the CLI's resume cannot rebuild it
        train_module.resume(run, quiet=True)
    done = flatpriv.fit(factory, pair, test, algorithm="dpsat", resume=run, **settings)
    assert done["finished"] and done["run_dir"] == run and done["epsilon"] == whole["epsilon"]
    expected = _weights(whole)
    for k, w in _weights(done).items():
        torch.testing.assert_close(w, expected[k], atol=1e-6, rtol=0)


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (x, int) items, as torchvision's are."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def test_fit_reads_a_torch_dataset_and_runs_without_test_data(tmp_path: Path) -> None:
    x, y = _images(200, 3)
    runs = []
    for data in (Pairs(x, y), (x, y)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        runs.append(flatpriv.fit(model, data, algorithm="sgd", epochs=1, batch_size=50, out=tmp_path, seed=1))
    a, b = runs
    assert a["test_accuracy"] is None and a["train_accuracy"] == b["train_accuracy"]
    for k, w in _weights(a).items():
        torch.testing.assert_close(w, _weights(b)[k], atol=0, rtol=0)
    assert not (Path(a["run_dir"]) / "arrays" / "test_logits.npy").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lrr": 0.1}, r"unknown keyword 'lrr' \(did you mean 'lr'\?\)"),
        ({"lr": -1.0}, r"lr \(optim\.lr\) = -1\.0: must be in \(0, inf\]"),
        ({"epochs": "3"}, r"epochs \(train\.epochs\): expected an integer"),
        ({"delta": 1e-4}, r"dpsat needs noise"),
        ({"delta": 1e-4, "noise_multiplier": 1.0, "algorithm": "dpsgdd"}, r"algorithm = 'dpsgdd'"),
        ({"noise_multiplier": 1.0, "batch_size": 10, "delta": 0.05}, r"privacy\.delta = 0\.05 ≥ 1/N"),
    ],
)
def test_fit_refuses_bad_settings_in_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    x, y = _images(50, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(FlatprivError, match=message) as err:
        flatpriv.fit(model, (x, y), out=tmp_path, **{"epochs": 1, **kwargs})
    assert len(str(err.value).splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before any run directory exists


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), None, r"returns 3 logits per example but the labels go up"),
        (nn.Linear(64, 10), None, r"model\(x_train\[:2\]\) failed: RuntimeError"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (torch.zeros(5, 64), torch.zeros(5)), r"integer class"),
        ("not a model", None, r"torch\.nn\.Module or a function"),
    ],
)
def test_fit_refuses_a_model_or_data_that_do_not_fit(tmp_path: Path, model, data, message: str) -> None:
    with pytest.raises(FlatprivError, match=message) as err:
        flatpriv.fit(model, data or _images(40, 5), algorithm="sgd", epochs=1, out=tmp_path)
    assert len(str(err.value).splitlines()) == 1 and not any(tmp_path.iterdir())


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


def test_step_counts_every_release_and_dpsam_twice() -> None:
    x, y = _images(200, 6)
    for algorithm, per_step in (("dpsgd", 1), ("dpsat", 1), ("dpsam", 2)):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        step = flatpriv.Step(model, opt, algorithm, noise_multiplier=1.2, batch_size=40, delta=1e-4, dataset_size=200)
        assert step.epsilon() == 0.0
        for _ in range(3):
            step(*step.sample(x, y))
        assert step.releases == 3 * per_step
        assert step.epsilon() == pytest.approx(epsilon(1.2, 0.2, 3 * per_step, 1e-4), rel=1e-9)
        assert step.epsilon(1e-3) < step.epsilon()


def test_step_sam_equals_a_hand_written_sam_step_and_leaves_weights_alone_until_the_descent() -> None:
    x, y = _images(64, 7)
    model, ref = _mlp(1), _mlp(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = flatpriv.Step(model, opt, "sam", rho=0.05)
    loss = step(x, y)
    # davda54's SAM by hand: g at w, ε = ρ g/‖g‖, the gradient at w + ε applied at w
    params = list(ref.parameters())
    g = torch.autograd.grad(F.cross_entropy(ref(x), y), params)
    norm = torch.sqrt(sum(gi.square().sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(0.05 * gi / norm)
    g_adv = torch.autograd.grad(F.cross_entropy(ref(x), y), params)
    with torch.no_grad():
        for p, gi, ga in zip(params, g, g_adv):
            p.sub_(0.05 * gi / norm).sub_(0.1 * ga)
    for a, b in zip(model.parameters(), params):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert loss.shape == () and math.isfinite(float(loss))


def test_step_refuses_what_breaks_dp_and_warns_on_batches_it_did_not_draw() -> None:
    x, y = _images(100, 8)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FlatprivError, match="needs noise"):
        flatpriv.Step(model, opt, "dpsgd", batch_size=20, delta=1e-4, dataset_size=100)
    with pytest.raises(FlatprivError, match="needs dataset_size"):
        flatpriv.Step(model, opt, "dpsgd", noise_multiplier=1.0, batch_size=20, delta=1e-4)
    with pytest.raises(FlatprivError, match="target_epsilon needs epochs"):
        flatpriv.Step(model, opt, "dpsgd", target_epsilon=1.0, batch_size=20, delta=1e-4, dataset_size=100)
    with pytest.raises(FlatprivError, match="unknown keyword 'lr'"):
        flatpriv.Step(model, opt, "dpsgd", lr=0.1, noise_multiplier=1.0, batch_size=20, dataset_size=100)
    with pytest.raises(FlatprivError, match="not private"):
        flatpriv.Step(model, opt, "sgd").epsilon()
    step = flatpriv.Step(model, opt, "dpsgd", noise_multiplier=1.0, batch_size=20, delta=1e-4, dataset_size=100)
    with pytest.raises(FlatprivError, match="dataset_size = 100"):
        step.sample(x[:50], y[:50])
    with pytest.warns(FlatprivWarning, match="not drawn by Step.sample") as caught:
        step(x[:20], y[:20])
        step(x[20:40], y[20:40])
    assert len([w for w in caught if "Step.sample" in str(w.message)]) == 1
    assert step.releases == 2
