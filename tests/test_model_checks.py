"""Models checked before DP training: BatchNorm refused and fixed, recurrent layers refused or checked against a
naive per-example loop, the one-line fallback warnings, and a tied-head CNN through fit against a naive loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TiedHeadCNN
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import flatpriv
from flatpriv.errors import FlatprivError
from flatpriv.privacy import FlatprivWarning, clipped_grad, fix_model, validate_model
from flatpriv.privacy.sampling import make_generator, standard_normal


class BNNet(nn.Module):
    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.head = nn.Sequential(*pool, nn.BatchNorm1d(channels), nn.Linear(channels, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Recurrent(nn.Module):
    """A recurrent layer over [B, T, 4] sequences, its last output into a Linear head (cells: one step)."""

    def __init__(self, rnn: nn.Module, hidden: int) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x if not isinstance(self.rnn, nn.RNNCellBase) else x[:, -1])
        out = out[0] if isinstance(out, tuple) else out
        return self.head(out[:, -1] if out.dim() == 3 else out)


def _images(n: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def naive_clipped_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> dict[str, torch.Tensor]:
    """Σ_i clip_C(∇ℓ_i): one backward per example through the model's own forward, then min(1, C/(‖g_i‖ + 1e-6))."""
    total = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        factor = min(1.0, clip / (math.sqrt(sum(float(v.square().sum()) for v in g.values())) + 1e-6))
        for k in total:
            total[k] += factor * g[k]
    model.zero_grad()
    return total


def test_batchnorm_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    model = BNNet()
    with pytest.raises(FlatprivError) as err:
        validate_model(model)
    message = str(err.value)
    assert "features.1 (BatchNorm2d)" in message and "head.2 (BatchNorm1d)" in message
    assert "fix_model" in message and len(message.splitlines()) == 1
    x, y = _images(60, 0)
    with pytest.raises(FlatprivError, match=r"features\.1 \(BatchNorm2d\)"):
        flatpriv.fit(model, (x, y), algorithm="dpsgd", noise_multiplier=1.0, batch_size=20, delta=1e-3, out=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before a run directory exists
    with pytest.raises(FlatprivError, match=r"features\.1 \(BatchNorm2d\)"):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        flatpriv.Step(model, opt, "dpsat", noise_multiplier=1.0, batch_size=20, delta=1e-3, dataset_size=60)
    plain = flatpriv.fit(model, (x, y), algorithm="sgd", epochs=1, batch_size=20, out=tmp_path)  # not DP: allowed
    assert plain["finished"] and plain["epsilon"] is None


def test_fix_model_replaces_batchnorm_by_groupnorm_and_the_result_trains_under_dp(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BNNet(channels=48)
    with torch.no_grad():
        model.features[1].weight.uniform_(0.5, 1.5)
    fixed = fix_model(model)
    assert isinstance(model.features[1], nn.BatchNorm2d)  # the original is left alone
    assert not any(isinstance(m, _BatchNorm) for m in fixed.modules())
    gn = fixed.features[1]
    assert isinstance(gn, nn.GroupNorm) and (gn.num_groups, gn.num_channels) == (16, 48)  # gcd(32, 48)
    torch.testing.assert_close(gn.weight, model.features[1].weight)
    assert fix_model(BNNet(channels=12)).features[1].num_groups == 4 and fix_model(BNNet(7)).head[2].num_groups == 1
    validate_model(fixed)
    x, y = _images(60, 1)
    common = {"algorithm": "dpsgd", "noise_multiplier": 1.0, "batch_size": 20, "delta": 1e-3, "epochs": 1}
    summary = flatpriv.fit(fixed, (x, y), out=tmp_path, **common)
    assert summary["finished"] and 0 < summary["epsilon"] < math.inf
    assert all(torch.isfinite(p).all() for p in fixed.parameters())
    again = flatpriv.fit(model, (x, y), out=tmp_path, fix_batchnorm=True, **common)  # fixed in place, then trained
    assert again["finished"] and isinstance(model.features[1], nn.GroupNorm)


def test_lstm_passes_and_its_clipped_sum_equals_a_naive_per_example_loop() -> None:
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM(4, 6, num_layers=2, batch_first=True), 6)  # float32: oneDNN's kernel, vmappable
    validate_model(model)
    x, y = torch.randn(12, 5, 4), torch.randint(0, 3, (12,))
    with pytest.warns(FlatprivWarning, match=r"does not cover rnn \(LSTM\)") as caught:
        oracle = clipped_grad(model, 1.0)
    assert oracle.method == "vmap" and len(str(caught[0].message).splitlines()) == 1
    norms = oracle(dict(model.named_parameters()), x, y, return_norms=True)[1].norms
    clip = float(norms.median())  # half the examples clipped
    got, _ = clipped_grad(model, clip)(dict(model.named_parameters()), x, y)
    expected = naive_clipped_sum(model, x, y, clip)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("rnn", "hidden", "name"),
    [
        (nn.GRU(4, 6, batch_first=True), 6, "GRU"),
        (nn.RNN(4, 6, batch_first=True), 6, "RNN"),
        (nn.LSTM(4, 6, proj_size=2, batch_first=True), 2, "LSTM"),
        (nn.GRUCell(4, 6), 6, "GRUCell"),
        (nn.LSTM(4, 6, batch_first=True).double(), 6, "LSTM"),  # float64: torch's own kernel, not vmappable
    ],
)
def test_recurrent_layers_no_path_computes_are_refused_in_one_line(rnn: nn.Module, hidden: int, name: str) -> None:
    model = Recurrent(rnn, hidden).to(next(rnn.parameters()).dtype)
    with pytest.raises(FlatprivError, match=rf"rnn \({name}\): no per-example gradient path") as err:
        validate_model(model)
    assert len(str(err.value).splitlines()) == 1
    x, y = torch.randn(6, 5, 4, dtype=next(rnn.parameters()).dtype), torch.randint(0, 3, (6,))
    # the refusal is not overcautious: vmap really fails on it, and even then the error is one line
    with pytest.warns(FlatprivWarning), pytest.raises(FlatprivError, match=rf"vmap failed.*rnn \({name}\)") as raw:
        clipped_grad(model, 1.0)(dict(model.named_parameters()), x, y)
    assert len(str(raw.value).splitlines()) == 1


def test_tied_head_cnn_through_fit_releases_the_naive_clipped_sum(tmp_path: Path) -> None:
    """One DP-SGD step of fit with q = 1 (the batch is every example) and plain SGD: w₁ = w₀ − η(S + σC z)/N, so
    S = N(w₀ − w₁)/η − σC z must be the naive loop's Σ clip_C(∇ℓ_i), with z the run's first noise draw."""
    torch.manual_seed(2)
    model = TiedHeadCNN().double()
    x, y = _images(120, 3, torch.float64)
    w0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    reference = TiedHeadCNN().double()
    reference.load_state_dict(model.state_dict())
    clip, sigma, lr, seed = 0.5, 1.0, 0.1, 11
    with pytest.warns(FlatprivWarning, match=r"'head\.weight' is also used outside its layer") as caught:
        summary = flatpriv.fit(
            model,
            (x, y),
            algorithm="dpsgd",
            epochs=1,
            sample_rate=1.0,
            lr=lr,
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
            noise_multiplier=sigma,
            clip_norm=clip,
            noise_seed=seed,
            delta=1e-3,
            out=tmp_path,
        )
    assert summary["steps"] == 1 and summary["releases"] == 1
    assert all(len(str(w.message).splitlines()) == 1 for w in caught if issubclass(w.category, FlatprivWarning))
    z = standard_normal(w0, make_generator(seed))
    expected = naive_clipped_sum(reference, x, y, clip)
    for k, p in model.named_parameters():
        released = len(y) * (w0[k] - p.detach()) / lr - sigma * clip * z[k]
        torch.testing.assert_close(released, expected[k], atol=1e-6, rtol=0)
