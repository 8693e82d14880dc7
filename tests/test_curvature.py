from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from flatpriv.memorization.curvature import VARIANTS, aggregate, input_curvature

D = 6  # small enough to enumerate all 2^D Rademacher probes


def _quadratic(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric indefinite A and the per-example loss ℓ(x) = ½ xᵀAx (input Hessian exactly A)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(D, D, generator=g, dtype=torch.float64)
    return (b + b.T) / 2, torch.randn(5, D, generator=g, dtype=torch.float64)


def _quad_loss(a: torch.Tensor):
    return lambda z, y: 0.5 * torch.einsum("ni,ij,nj->n", z, a, z)  # per-example: the module sums it


def _exact_moments(a: torch.Tensor, h: float) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each variant's per-probe quantity, by enumerating every probe."""
    r = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=D)), dtype=torch.float64)
    ar = r @ a
    per = {"norm": h * ar.norm(dim=1), "squared": ar.square().sum(1), "trace": (r * ar).sum(1)}
    return {k: (v.mean().item(), v.std(unbiased=False).item()) for k, v in per.items()}


def _mlp(seed: int = 0, dtype: torch.dtype = torch.float64, act: type[torch.nn.Module] = torch.nn.Tanh):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32), act(), torch.nn.Linear(32, 32), act(), torch.nn.Linear(32, 4)
    ).to(dtype)


def _data(n: int = 40, dtype: torch.dtype = torch.float64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def _score(model, x, y, seed=0, **kw):
    return input_curvature(model, x, y, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("method", ["finite_difference", "hvp"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_quadratic_matches_analytic_values(variant: str, method: str) -> None:
    a, x = _quadratic()
    h, n = 1e-3, 2000
    mean, std = _exact_moments(a, h)[variant]
    analytic = {"trace": torch.trace(a).item(), "squared": torch.trace(a @ a).item()}
    if variant in analytic:  # the enumeration agrees with the closed forms tr(A), tr(A²)
        assert mean == pytest.approx(analytic[variant], rel=1e-10, abs=1e-10)
    assert std > 0
    s = _score(
        lambda z: z, x, torch.zeros(len(x)), n_probes=n, h=h, variant=variant, method=method, loss_fn=_quad_loss(a)
    )
    assert s.dtype == torch.float32 and s.shape == (len(x),)
    assert torch.all((s.double() - mean).abs() < 5 * std / math.sqrt(n) + 1e-5 * abs(mean)), (s, mean, std)


def test_quadratic_fd_equals_hvp_with_same_probes() -> None:
    a, x = _quadratic(3)
    kw = dict(n_probes=7, h=1e-3, loss_fn=_quad_loss(a))
    for variant in VARIANTS:
        fd = _score(lambda z: z, x, torch.zeros(len(x)), variant=variant, **kw)
        hv = _score(lambda z: z, x, torch.zeros(len(x)), variant=variant, method="hvp", **kw)
        torch.testing.assert_close(fd, hv, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fd_agrees_with_hvp_on_mlp(variant: str) -> None:
    model, (x, y) = _mlp(), _data()
    h = 1e-4
    fd = _score(model, x, y, variant=variant, h=h)
    hv = _score(model, x, y, variant=variant, h=h, method="hvp")
    assert hv.abs().max() / (h if variant == "norm" else 1.0) > 1e-3  # non-trivial curvature
    torch.testing.assert_close(fd, hv, rtol=2e-3, atol=1e-3 * hv.abs().max().item())
    # With another probe draw the two disagree by far more: the agreement is not a tolerance artefact.
    other = _score(model, x, y, seed=1, variant=variant, h=h, method="hvp")
    assert (other - hv).abs().max() > 10 * (fd - hv).abs().max()


def test_fd_float32_default_step_close_to_hvp() -> None:
    model, (x, y) = _mlp(dtype=torch.float32), _data(dtype=torch.float32)
    fd, hv = _score(model, x, y), _score(model, x, y, method="hvp")
    torch.testing.assert_close(fd, hv, rtol=2e-2, atol=1e-3 * hv.abs().max().item())


def test_independent_of_batch_size_and_batch_content() -> None:
    model, (x, y) = _mlp(), _data(50)
    full = _score(model, x, y, variant="trace", batch_size=256)
    torch.testing.assert_close(_score(model, x, y, variant="trace", batch_size=7), full, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(
        _score(model, x[:13], y[:13], variant="trace", batch_size=1), full[:13], rtol=1e-7, atol=1e-9
    )


def test_determinism_and_seed_dependence() -> None:
    model, (x, y) = _mlp(), _data()
    assert torch.equal(_score(model, x, y), _score(model, x, y))
    assert not torch.equal(_score(model, x, y), _score(model, x, y, seed=1))


def test_eval_mode_during_scoring_and_modes_restored() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 4)
    ).double()
    model.train()
    model[1].eval()  # a mixed-mode model must come back mixed
    x, y = _data()
    before = [p.detach().clone() for p in model.parameters()]
    s_train = _score(model, x, y)
    assert [m.training for m in model] == [True, False, True, True] and model.training
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(_score(model, x, y), s_train, rtol=0, atol=0)  # dropout was off
    assert not model.training
    torch.testing.assert_close(_score(lambda z: model(z), x, y), s_train, rtol=0, atol=0)  # plain callable


def test_works_under_no_grad() -> None:
    model, (x, y) = _mlp(), _data()
    with torch.no_grad():
        s = _score(model, x, y)
    torch.testing.assert_close(s, _score(model, x, y))


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only adds contention
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("one_thread")
def test_mislabelled_examples_have_higher_curvature() -> None:
    torch.manual_seed(0)
    n = 300
    x = torch.randn(n, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[torch.randperm(n)[:30]] = True
    y[flipped] = 1 - y[flipped]
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    checkpoints = []
    for step in range(400):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 100 == 99:
            checkpoints.append(_score(model, x, y))
    assert (model(x).argmax(1) == y).float().mean() > 0.95  # the flipped labels were memorized
    for s in (checkpoints[-1], aggregate(checkpoints)):
        assert roc_auc_score(flipped.numpy(), s.numpy()) > 0.8


def test_aggregate() -> None:
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 5.0, 8.0], [2.0, 7.0, 1.0, 0.0]])
    torch.testing.assert_close(aggregate(list(s)), s.mean(0))
    torch.testing.assert_close(aggregate(s, "max"), s.amax(0))
    torch.testing.assert_close(aggregate(s, "sum"), s.sum(0))
    mask = torch.tensor([[True, False, True, False], [True, False, False, False], [False, True, True, False]])
    nan = float("nan")
    torch.testing.assert_close(aggregate(s, "mean", mask), torch.tensor([2.0, 7.0, 2.0, nan]), equal_nan=True)
    torch.testing.assert_close(aggregate(s, "max", mask), torch.tensor([3.0, 7.0, 3.0, nan]), equal_nan=True)
    torch.testing.assert_close(aggregate(s, "sum", mask), torch.tensor([4.0, 7.0, 4.0, nan]), equal_nan=True)
    torch.testing.assert_close(aggregate(s[0]), s[0])
    with pytest.raises(ValueError):
        aggregate(s, "median")
    with pytest.raises(ValueError):
        aggregate(s, mask=mask[:2])


@pytest.mark.parametrize(
    "kw",
    [dict(variant="hessian"), dict(method="exact"), dict(n_probes=0), dict(h=0.0), dict(h=-1e-3), dict(batch_size=0)],
)
def test_bad_arguments(kw: dict) -> None:
    model, (x, y) = _mlp(), _data(4)
    with pytest.raises(ValueError):
        input_curvature(model, x, y, **kw)
    with pytest.raises(ValueError):
        input_curvature(model, x, y[:3])


@pytest.mark.parametrize("method", ["finite_difference", "hvp"])
def test_all_variants_at_once_equal_each_variant_alone(method: str) -> None:
    """input_curvatures reduces one set of probes three ways: each equals input_curvature with the same seed."""
    from flatpriv.memorization.curvature import input_curvatures

    model, (x, y) = _mlp(), _data()
    together = input_curvatures(model, x, y, generator=torch.Generator().manual_seed(3), method=method, batch_size=7)
    for v in VARIANTS:
        assert torch.equal(together[v], _score(model, x, y, seed=3, variant=v, method=method, batch_size=7))
