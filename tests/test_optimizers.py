"""The SAM family against independent references: the classic in-place perturb–gradient–restore loop,
reductions between algorithms (VaSSO θ=1 ≡ SAM, SAM ρ=0 ≡ SGD), ‖ε‖ = ρ and ASAM's formula by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from flatpriv import tree as T
from flatpriv.config import Config, config_from_dict
from flatpriv.step import ALGORITHMS, take_step
from flatpriv.step import ascent as sharpness
from flatpriv.step.oracles import mean_grad


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _batches(n_steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)) for _ in range(n_steps)]


def _cfg(algorithm: str, **sharp: float) -> Config:
    return config_from_dict({"algorithm": algorithm, "sharpness": sharp})


def _run_flatpriv(model: torch.nn.Module, cfg: Config, batches, lr=0.1, momentum=0.9, wd=5e-4):
    params = dict(model.named_parameters())
    pipe = ALGORITHMS[cfg.algorithm].pipeline(cfg, model, None)
    opt = torch.optim.SGD(params.values(), lr=lr, momentum=momentum, weight_decay=wd)
    state = pipe.init(params)
    for x, y in batches:
        state, _ = take_step(pipe, params, state, opt, x, y)
    return {k: v.detach().clone() for k, v in params.items()}


def _run_reference_sam(model: torch.nn.Module, rho: float, batches, lr=0.1, momentum=0.9, wd=5e-4):
    """SAM as users write it today (davda54/sam style): perturb p.data in place, second pass, restore."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grad_norm = torch.norm(torch.stack([p.grad.norm(2) for p in model.parameters()]), 2)
        perturbations = []
        with torch.no_grad():
            for p in model.parameters():
                e = p.grad * (rho / (grad_norm + 1e-12))
                p.add_(e)
                perturbations.append(e)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, e in zip(model.parameters(), perturbations):
                p.sub_(e)
        opt.step()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _assert_trees_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0)


def test_sam_matches_perturb_restore_reference():
    batches = _batches(3)
    ours = _run_flatpriv(_mlp(), _cfg("sam", rho=0.2), batches)
    ref = _run_reference_sam(_mlp(), 0.2, batches)
    _assert_trees_close(ours, ref, atol=1e-6)
    # and SAM really moved differently from SGD, so the comparison above has teeth
    sgd = _run_flatpriv(_mlp(), _cfg("sgd"), batches)
    assert max((ours[k] - sgd[k]).abs().max().item() for k in ours) > 1e-4


def test_vasso_theta_one_equals_sam():
    batches = _batches(5)
    vasso = _run_flatpriv(_mlp(), _cfg("vasso", rho=0.1, theta=1.0), batches)
    sam = _run_flatpriv(_mlp(), _cfg("sam", rho=0.1), batches)
    _assert_trees_close(vasso, sam, atol=1e-6)
    vasso_09 = _run_flatpriv(_mlp(), _cfg("vasso", rho=0.1, theta=0.5), batches)
    assert max((vasso_09[k] - sam[k]).abs().max().item() for k in sam) > 1e-5


def test_sam_rho_zero_equals_sgd():
    batches = _batches(4)
    _assert_trees_close(
        _run_flatpriv(_mlp(), _cfg("sam", rho=0.0), batches), _run_flatpriv(_mlp(), _cfg("sgd"), batches), atol=1e-7
    )


def test_sharpreg_lambda_zero_equals_sgd_and_matches_its_formula():
    batches = _batches(2)
    _assert_trees_close(
        _run_flatpriv(_mlp(), _cfg("sharpreg", rho=0.1, sharpreg_lambda=0.0), batches),
        _run_flatpriv(_mlp(), _cfg("sgd"), batches),
        atol=1e-7,
    )
    model = _mlp()
    params = dict(model.named_parameters())
    x, y = batches[0]
    pipe = ALGORITHMS["sharpreg"].pipeline(_cfg("sharpreg", rho=0.1, sharpreg_lambda=0.7), model, None)
    g, _, _ = pipe.grad(params, pipe.init(params), x, y)
    oracle = mean_grad(model)
    g0, _ = oracle(params, x, y)
    eps = T.scale(g0, 0.1 / T.norm(g0).item())
    g1, _ = oracle(T.add(params, eps), x, y)
    for k in g:
        torch.testing.assert_close(g[k], 1.7 * g0[k] - 0.7 * g1[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [lambda: sharpness.sam(0.37), lambda: sharpness.vasso(0.37, 0.9)])
def test_perturbation_norm_is_rho(make):
    asc = make()
    params = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    state = asc.direction.init(params)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):  # VaSSO's d changes across steps; ‖ε‖ must stay ρ
        grad = {"a": torch.randn(3, generator=g), "b": torch.randn(2, 2, generator=g)}
        eps, state = asc.direction.update(grad, state, params)
        assert T.norm(eps).item() == pytest.approx(0.37, rel=1e-6)


def test_vasso_direction_is_the_ema_with_d1_equal_g1():
    asc = sharpness.vasso(1.0, 0.25)
    params = {"a": torch.zeros(2)}
    state = asc.direction.init(params)
    g1, g2 = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 8.0])
    eps1, state = asc.direction.update({"a": g1}, state, params)
    torch.testing.assert_close(eps1["a"], g1 / 5.0)  # d_1 = g_1, not θ g_1
    eps2, _ = asc.direction.update({"a": g2}, state, params)
    d2 = 0.75 * g1 + 0.25 * g2  # (3·0.75, 3 + 2) = (2.25, 5)
    torch.testing.assert_close(eps2["a"], d2 / d2.norm())


def test_asam_matches_hand_computed_example():
    rho, eta = 0.1, 0.01
    params = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[0.5]])}
    grad = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[-1.0]])}
    direction = sharpness.asam(rho, eta).direction
    eps, _ = direction.update(grad, direction.init(params), params)
    # T = |w| + η = (1.01, 2.01, 0.51); T g = (3.03, 8.04, -0.51)
    norm_tg = math.sqrt(3.03**2 + 8.04**2 + 0.51**2)
    expected_a = [rho * 1.01**2 * 3.0 / norm_tg, rho * 2.01**2 * 4.0 / norm_tg]
    expected_b = [[rho * 0.51**2 * -1.0 / norm_tg]]
    torch.testing.assert_close(eps["a"], torch.tensor(expected_a), atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(eps["b"], torch.tensor(expected_b), atol=1e-7, rtol=1e-6)


def test_weights_are_never_left_perturbed():
    model = _mlp()
    params = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    pipe = ALGORITHMS["sam"].pipeline(_cfg("sam", rho=0.5), model, None)
    x, y = _batches(1)[0]
    pipe.grad(params, pipe.init(params), x, y)  # gradient only, no descent
    _assert_trees_close({k: v.detach() for k, v in params.items()}, before, atol=0)


def test_sam_without_copying_the_model_is_deterministic():
    batches = _batches(2)
    m = _mlp()
    a = _run_flatpriv(copy.deepcopy(m), _cfg("vasso"), batches)
    b = _run_flatpriv(copy.deepcopy(m), _cfg("vasso"), batches)
    _assert_trees_close(a, b, atol=0)
