"""Parameter-space sharpness (λ_max by power iteration, Hutchinson's trace) against exact Hessians: the closed form
2XᵀX/n of least squares, a quadratic with a known indefinite Hessian, and a tiny MLP's full Hessian from
``torch.autograd.functional.hessian``; batching, subsets, seeds; the ``flatpriv sharpness`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn
from torch.func import functional_call

from flatpriv.cli import main
from flatpriv.config import ModelConfig
from flatpriv.models import build_model
from flatpriv.step.sharpness import fixed_subset, hessian_trace, hessian_vector_product, top_eigenvalue

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only adds contention
    yield
    torch.set_num_threads(n)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()  # 31 parameters


def _data(n: int = 20, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def _exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=F.cross_entropy) -> torch.Tensor:
    """The full Hessian of the mean loss over (x, y) with respect to the flattened parameters, in float64."""
    named = {k: v.detach().double() for k, v in model.named_parameters()}
    sizes = [v.numel() for v in named.values()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        tree = {k: p.view_as(named[k]) for k, p in zip(named, flat.split(sizes))}
        return loss_fn(functional_call(model, tree, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, torch.cat([v.flatten() for v in named.values()]))


def _flat(tree: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in tree.values()])


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out.squeeze(1) - y) ** 2).mean()


def test_lambda_max_matches_eigvalsh_on_a_tiny_mlp() -> None:
    model, (x, y) = _mlp(), _data()
    exact = torch.linalg.eigvalsh(_exact_hessian(model, x, y))
    assert exact[-1] > 0
    for dtype in (F64, torch.float32):  # float32 is the default
        top = top_eigenvalue(model, x, y, iters=1000, tol=1e-9, dtype=dtype)
        assert top.converged and 1 < top.iterations < 1000
        assert abs(top.value - exact[-1].item()) <= 1e-4 * exact[-1].item(), (dtype, top.value, exact[-1])
    # The eigenvector too: H v = λ v.
    h = _exact_hessian(model, x, y)
    top = top_eigenvalue(model, x, y, iters=1000, tol=1e-12, dtype=F64)
    v = _flat(top.vector)
    torch.testing.assert_close(h @ v, exact[-1] * v, atol=1e-5, rtol=0)


def test_least_squares_against_the_closed_form() -> None:
    """L(w) = (1/n) Σ (wᵀx_i − y_i)²: H = 2XᵀX/n exactly, with no autograd in the reference."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 6, generator=g, dtype=F64) * torch.tensor([3.0, 1, 1, 0.5, 0.5, 0.2], dtype=F64)
    y = torch.randn(50, generator=g, dtype=F64)
    model = nn.Linear(6, 1, bias=False).double()
    h = 2 * x.T @ x / len(x)
    top = top_eigenvalue(model, x, y, loss_fn=_mse, iters=500, tol=1e-10, dtype=F64, batch_size=16)
    assert top.value == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-6)
    trace = hessian_trace(model, x, y, loss_fn=_mse, probes=200, dtype=F64, batch_size=16)
    assert abs(trace.mean - torch.trace(h).item()) <= 3 * trace.stderr


class _Quadratic(nn.Module):
    """L(w) = ½ wᵀAw whatever the data: the Hessian is A."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], -1)


def test_a_negative_dominant_eigenvalue_is_not_reported_as_lambda_max() -> None:
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=F64))
    a = q @ torch.diag(torch.tensor([-5.0, -1.0, 0.5, 2.0, 3.0], dtype=F64)) @ q.T

    def half_quadratic(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("bi,ij,bj->b", out, a, out).mean()

    x, y = torch.zeros(4, 1, dtype=F64), torch.zeros(4)
    top = top_eigenvalue(_Quadratic(5), x, y, loss_fn=half_quadratic, iters=2000, tol=1e-12, dtype=F64)
    assert top.dominant == pytest.approx(-5.0, rel=1e-6)  # what plain power iteration finds
    assert top.value == pytest.approx(3.0, rel=1e-6) and top.converged


def _probes(model: nn.Module, probes: int, seed: int) -> torch.Tensor:
    """The Rademacher probes as the estimator draws them (CPU generator, one leaf after another), rebuilt here."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(probes):
        leaves = [torch.randint(0, 2, p.shape, generator=g, dtype=torch.int8) for p in model.parameters()]
        out.append(torch.cat([r.flatten() for r in leaves]).double() * 2 - 1)
    return torch.stack(out)


def test_hutchinson_trace_against_the_exact_trace() -> None:
    model, (x, y) = _mlp(), _data()
    h = _exact_hessian(model, x, y)
    exact = torch.trace(h).item()
    small = hessian_trace(model, x, y, probes=25, dtype=F64, batch_size=7)
    large = hessian_trace(model, x, y, probes=400, seed=1, dtype=F64)
    for t in (small, large):
        assert abs(t.mean - exact) <= 3 * t.stderr, (t.mean, t.stderr, exact)
    assert large.stderr < 0.5 * small.stderr  # ~1/√P: 16x the probes, about a quarter of the error
    # Every sample is vᵀHv for the probe the seed gives, exactly; the stderr is their sd/√P.
    v = _probes(model, 25, 0)
    torch.testing.assert_close(small.samples, torch.einsum("pi,ij,pj->p", v, h, v), atol=1e-10, rtol=1e-10)
    assert small.stderr == pytest.approx(small.samples.std().item() / 5)
    # float32 (the default) agrees with float64 on the same probes.
    f32 = hessian_trace(model, x, y, probes=25, batch_size=7)
    torch.testing.assert_close(f32.samples, small.samples, atol=1e-4, rtol=1e-4)


def test_batches_give_the_hvp_of_the_whole_set() -> None:
    model, (x, y) = _mlp(), _data(23)
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    exact = _exact_hessian(model, x, y) @ _flat(v)
    whole = _flat(hessian_vector_product(model, x, y, v, dtype=F64, batch_size=64))
    for b in (1, 5, 7, 22):  # 23 = 3·7 + 2: the last batch is small and must weigh 2/23, not 1/4
        torch.testing.assert_close(_flat(hessian_vector_product(model, x, y, v, dtype=F64, batch_size=b)), whole)
    torch.testing.assert_close(whole, exact, atol=1e-10, rtol=1e-8)
    unweighted = sum(_exact_hessian(model, x[i : i + 7], y[i : i + 7]) for i in range(0, 23, 7)) / 4 @ _flat(v)
    assert not torch.allclose(unweighted, exact, atol=1e-4)  # so the check above could fail


def test_a_subset_uses_exactly_those_examples() -> None:
    model, (x, y) = _mlp(), _data()
    idx = [3, 5, 11, 17, 18]
    h_sub = _exact_hessian(model, x[idx], y[idx])
    top = top_eigenvalue(model, x, y, indices=idx, iters=1000, tol=1e-12, dtype=F64, batch_size=2)
    assert top.examples == 5
    assert top.value == pytest.approx(torch.linalg.eigvalsh(h_sub)[-1].item(), rel=1e-6)
    full = torch.linalg.eigvalsh(_exact_hessian(model, x, y))[-1].item()
    assert abs(top.value - full) > 1e-3 * full  # the subset's Hessian is not the full set's
    trace = hessian_trace(model, x, y, indices=torch.tensor(idx), probes=50, dtype=F64)
    torch.testing.assert_close(trace.samples, hessian_trace(model, x[idx], y[idx], probes=50, dtype=F64).samples)
    # A count with a seed: a fixed subset, the same every time, sorted, distinct; another seed gives another one.
    s = fixed_subset(20, 8, seed=4)
    assert torch.equal(s, fixed_subset(20, 8, seed=4)) and len(set(s.tolist())) == 8
    assert torch.equal(s, s.sort().values) and not torch.equal(s, fixed_subset(20, 8, seed=5))
    with pytest.raises(ValueError):
        fixed_subset(20, 21)


def test_deterministic_given_the_seed_and_model_untouched() -> None:
    model, (x, y) = _mlp(), _data()
    model.train()
    before = {k: v.clone() for k, v in model.named_parameters()}
    a, b = top_eigenvalue(model, x, y, iters=5, tol=0), top_eigenvalue(model, x, y, iters=5, tol=0)
    assert a.value == b.value and a.iterations == 5 and not a.converged
    assert top_eigenvalue(model, x, y, iters=5, tol=0, seed=1).value != a.value
    t = hessian_trace(model, x, y, probes=8)
    assert torch.equal(t.samples, hessian_trace(model, x, y, probes=8).samples)
    assert not torch.equal(t.samples, hessian_trace(model, x, y, probes=8, seed=1).samples)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert all(p.dtype == F64 for p in model.parameters())  # a float32 measure ran on a copy
    # Another tree is measured without loading it: the same as a model holding those weights.
    other = {k: 2 * v.detach() for k, v in model.named_parameters()}
    twin = _mlp()
    twin.load_state_dict(other)
    assert (
        top_eigenvalue(model, x, y, params=other, iters=5, tol=0).value
        == top_eigenvalue(twin, x, y, iters=5, tol=0).value
    )


@pytest.mark.parametrize("name", ["cnn1d", "resnet"])
def test_models_the_trainer_builds(name: str) -> None:
    """GroupNorm convolutional models: H is symmetric (uᵀHv = vᵀHu) and λ_max bounds every Rayleigh quotient."""
    shape = (1, 12) if name == "cnn1d" else (1, 8, 8)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=4, depth=1, groups=2), shape, 3)
    x, y = torch.randn(10, *shape), torch.randint(0, 3, (10,))
    u = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    w = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    hu, hw = (_flat(hessian_vector_product(model, x, y, t, dtype=F64, batch_size=4)) for t in (u, w))
    assert _flat(w) @ hu == pytest.approx((_flat(u) @ hw).item(), rel=1e-8)
    top = top_eigenvalue(model, x, y, iters=100, tol=1e-4)
    assert top.value > 0 and top.value >= (_flat(u) @ hu).item() / (_flat(u) @ _flat(u)).item()
    assert math.isfinite(hessian_trace(model, x, y, probes=4).mean)


@pytest.mark.parametrize(
    "kw", [{"iters": 0}, {"tol": -1.0}, {"batch_size": 0}, {"indices": [0, 20]}, {"indices": []}, {"probes": 0}]
)
def test_bad_arguments(kw: dict) -> None:
    model, (x, y) = _mlp(), _data()
    fn = hessian_trace if "probes" in kw else top_eigenvalue
    with pytest.raises(ValueError):
        fn(model, x, y, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_the_device_of_the_model() -> None:
    model, (x, y) = _mlp(), _data()
    cpu = top_eigenvalue(model, x, y, iters=50, tol=0)
    gpu = top_eigenvalue(model.cuda(), x, y, iters=50, tol=0)  # data on the CPU: batches move to the model
    assert gpu.vector["0.weight"].is_cuda and gpu.value == pytest.approx(cpu.value, rel=1e-4)
    t_cpu, t_gpu = (
        hessian_trace(model.cpu(), x, y, probes=20),
        hessian_trace(model.cuda(), x.cuda(), y.cuda(), probes=20),
    )
    torch.testing.assert_close(t_gpu.samples, t_cpu.samples, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flatpriv.config_io import resolve
    from flatpriv.train import train

    cfg, _ = resolve(overrides=TINY + ["train.epochs=1", "model.width=8"])
    return Path(train(cfg, out=tmp_path_factory.mktemp("runs"), quiet=True)["run_dir"])


def test_the_cli_measures_a_trained_run(trained: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["sharpness", str(trained), "--subset", "100", "--iters", "30", "--probes", "6", "--seed", "2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["examples"] == 100 and out["probes"] == 6 and out["iterations"] <= 30
    # The same numbers from the library on the run's own data and weights (model.pt, config.json).
    from flatpriv.analyses.sharpness import load_run_model

    _, model, data = load_run_model(trained)
    idx = fixed_subset(len(data.y_train), 100, seed=2)
    top = top_eigenvalue(model, data.x_train[idx], data.y_train[idx], iters=30, seed=2)
    trace = hessian_trace(model, data.x_train[idx], data.y_train[idx], probes=6, seed=2)
    assert out["lambda_max"] == pytest.approx(top.value, rel=1e-6) and out["lambda_max"] > 0
    assert out["trace_mean"] == pytest.approx(trace.mean, rel=1e-6)
    assert out["trace_stderr"] == pytest.approx(trace.stderr, rel=1e-6)
    assert main(["sharpness", str(trained), "--iters", "3", "--probes", "2"]) == 0  # full set, human output
    assert "lambda_max" in capsys.readouterr().out


def test_the_cli_refuses_with_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sharpness", str(trained), "--subset", "100000"]) == 2
    assert "training examples" in capsys.readouterr().err
    assert main(["sharpness", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    no_model = tmp_path / "run"
    no_model.mkdir()
    (no_model / "config.json").write_text((trained / "config.json").read_text())
    assert main(["sharpness", str(no_model)]) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and err.count("\n") == 1
