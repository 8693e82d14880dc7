"""Tests for flatpriv.clipping / flatpriv.ghost: Σ_i clip_C(∇ℓ_i) against a naive per-example autograd loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from flatpriv.config import ModelConfig
from flatpriv.models import build_model
from flatpriv.privacy import ghost_rules
from flatpriv.privacy.clipping import FlatprivWarning, clipped_grad, supports_ghost
from flatpriv.privacy.ghost import unsupported_parts
from flatpriv.step.oracles import mean_grad
from flatpriv.tree import Tree, add, norm

NUM_CLASSES = 5


class TokenMLP(nn.Module):
    """Linear layers applied per token on [B, T, d] (T = 3: the ghost Gram is cheaper than materialising)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2, self.head = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin2(torch.tanh(self.lin1(x)))).mean(1))


class EmbeddingNet(nn.Module):
    """Embedding (repeated indices, padding_idx) → per-token Linear → mean over tokens → head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6, padding_idx=0)
        self.lin, self.head = nn.Linear(6, 6), nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(self.emb(x))).mean(1))


class Twice(nn.Module):
    """One Linear called twice in a forward: its calls are concatenated along the token axis."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(6, 6), nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class GroupNormTwice(nn.Module):
    """One GroupNorm called twice in a forward: its per-example sums add over the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.Linear(24, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(torch.tanh(self.norm(self.conv(x))))).flatten(1))


class Scaled(nn.Module):
    """A bare nn.Parameter used in forward: not a supported layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, NUM_CLASSES)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


class DirectWeight(nn.Module):
    """Uses a Linear's weight without calling the module: only detectable while running."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(6, 6), nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(F.linear(x, self.lin.weight, self.lin.bias)))


class TiedHead(nn.Module):
    """Weight tying: the embedding matrix is also the output layer, F.linear(h, emb.weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin = nn.Embedding(12, 6), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.tanh(self.lin(self.emb(x))).mean(1), self.emb.weight)


class ForwardBypass(nn.Module):
    """A Linear called normally once and once through .forward() (which skips its hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(6, 6), nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin.forward(torch.tanh(self.lin(x)))))


def _flatpriv(name: str, shape: tuple[int, ...], width: int) -> tuple[nn.Module, tuple[int, ...]]:
    return build_model(ModelConfig(name=name, width=width, depth=2, groups=2), shape, NUM_CLASSES), shape


def make(name: str) -> tuple[nn.Module, tuple[int, ...] | str]:
    """(float64 model, per-example input shape, or "indices" for integer token inputs [7])."""
    seq = nn.Sequential
    models: dict[str, tuple[nn.Module, tuple[int, ...] | str]] = {
        "linear": (seq(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 8, bias=False), nn.ReLU(), nn.Linear(8, 5)), (10,)),
        "tokens": (TokenMLP(), (3, 4)),
        "conv1d": (
            seq(
                nn.Conv1d(2, 4, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv1d(4, 4, 2, dilation=2, bias=False),
                nn.Tanh(),
                nn.Conv1d(4, 3, 3, padding="same", padding_mode="circular"),
                nn.Conv1d(3, 3, 3, padding=1, padding_mode="reflect"),
                nn.Flatten(),
                nn.Linear(12, 5),
            ),
            (2, 11),
        ),  # fmt: skip
        "conv2d": (
            seq(
                nn.Conv2d(2, 4, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(4, 4, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(1, 2)),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 5),
            ),
            (2, 7, 9),
        ),  # fmt: skip
        "conv3d": (seq(nn.Conv3d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(16, 5)), (1, 3, 3, 3)),
        "groupnorm": (
            seq(
                nn.Conv1d(2, 4, 3),
                nn.GroupNorm(2, 4),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(24, 8),
                nn.GroupNorm(4, 8),
                nn.Tanh(),
                nn.Linear(8, 5),
            ),
            (2, 8),
        ),  # fmt: skip
        "embedding": (EmbeddingNet(), "indices"),
        "twice": (Twice(), (6,)),
        "groupnorm_twice": (GroupNormTwice(), (2, 8)),
        "mlp": _flatpriv("mlp", (10,), 16),
        "cnn1d": _flatpriv("cnn1d", (2, 12), 6),
        "cnn2d": _flatpriv("cnn2d", (1, 8, 8), 4),
        "resnet": _flatpriv("resnet", (3, 8, 8), 4),
        "layernorm": (seq(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 5)), (6,)),
        "parameter": (Scaled(), (6,)),
        "grouped_conv": (seq(nn.Conv1d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 5)), (2, 6)),
        "direct_weight": (DirectWeight(), (6,)),
        "inplace": (seq(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 5)), (6,)),
        "tied_head": (TiedHead(), "indices"),
        "forward_bypass": (ForwardBypass(), (6,)),
    }
    model, shape = models[name]
    return model.double(), shape


SUPPORTED = ["linear", "tokens", "conv1d", "conv2d", "conv3d", "groupnorm", "embedding", "twice", "groupnorm_twice"]
OWN = ["mlp", "cnn1d", "cnn2d", "resnet"]
UNSUPPORTED = ["layernorm", "parameter", "grouped_conv"]
# supports_ghost is True; the ghost path notices while running (the last two: a parameter use its hooks cannot
# see, caught by the one-time check against autograd's summed gradient)
RUNTIME_FALLBACK = ["direct_weight", "inplace", "tied_head", "forward_bypass"]


def batch(
    shape: tuple[int, ...] | str, n: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 12, (n, 7)) if shape == "indices" else torch.randn(n, *shape, dtype=dtype)
    return x, torch.randint(0, NUM_CLASSES, (n,))


def params_of(model: nn.Module) -> Tree:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def naive(model: nn.Module, params: Tree, x: torch.Tensor, y: torch.Tensor) -> tuple[list[Tree], torch.Tensor]:
    """Per-example gradients, one autograd call per example, and their global norms."""
    grads = []
    for i in range(len(x)):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        loss = F.cross_entropy(functional_call(model, leaves, (x[i : i + 1],)), y[i : i + 1])
        grads.append(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True))))
        grads[-1] = {k: torch.zeros_like(params[k]) if g is None else g for k, g in grads[-1].items()}
    norms = torch.stack([norm(g) for g in grads]) if grads else torch.zeros(0, dtype=torch.float64)
    return grads, norms


def naive_clipped(params: Tree, grads: list[Tree], norms: torch.Tensor, c: float) -> Tree:
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    for g, n in zip(grads, norms):
        out = add(out, g, alpha=min(1.0, c / (float(n) + 1e-6)))
    return out


def assert_trees_close(a: Tree, b: Tree, **tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


def check_against_loop(name: str, n: int, methods: tuple[str, ...] = ("ghost", "vmap")) -> None:
    torch.manual_seed(0)
    model, shape = make(name)
    params = params_of(model)
    x, y = batch(shape, n)
    grads, norms = naive(model, params, x, y)
    # halfway between two order statistics, so no example's norm sits on the clipping threshold (its side would
    # then depend on the last bit of each method's arithmetic)
    ordered = norms.sort().values
    k = max(0, int(0.2 * (n - 1)))
    small = float(ordered[k : k + 2].mean()) if n > 1 else (0.5 * float(norms[0]) if n else 1.0)
    large = 2 * float(norms.max()) + 1 if n else 1.0
    for c in (small, large):
        expected = naive_clipped(params, grads, norms, c)
        for method in methods:
            oracle = clipped_grad(model, c, method)
            out, info = oracle(params, x, y, return_norms=True)
            assert oracle.sensitivity == c and info.batch_size == n
            assert_trees_close(out, expected, atol=1e-10, rtol=1e-7)
            torch.testing.assert_close(info.norms, norms, atol=1e-10, rtol=1e-7)
            torch.testing.assert_close(
                info.clipped_fraction, (norms > c).double().mean() if n else torch.tensor(0.0).double()
            )
            if n >= 16:  # the two C's really are "most clipped" and "none clipped"
                assert float(info.clipped_fraction) > 0.5 if c == small else float(info.clipped_fraction) == 0.0
            if n == 0:
                assert float(info.loss) == 0.0 and info.norms.shape == (0,)
                assert all(float(v.abs().sum()) == 0 for v in out.values())


@pytest.mark.parametrize("n", [0, 1, 64])
@pytest.mark.parametrize("name", SUPPORTED + OWN)
def test_both_methods_match_naive_loop(name: str, n: int) -> None:
    model, _ = make(name)
    assert supports_ghost(model)
    assert clipped_grad(model, 1.0).method == "ghost"
    check_against_loop(name, 16 if (name == "resnet" and n == 64) else n)


@pytest.mark.parametrize("name", ["tokens", "conv1d", "conv2d", "embedding", "cnn2d"])
@pytest.mark.parametrize("ghost_norm", [True, False])
def test_ghost_norm_and_materialised_branches(name: str, ghost_norm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force each layer's choice between the T×T ghost Gram and materialised per-example weight gradients."""
    monkeypatch.setattr(ghost_rules, "_ghost_cheaper", lambda *shape: ghost_norm)
    check_against_loop(name, 24, methods=("ghost",))


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_layer_falls_back_to_vmap(name: str) -> None:
    model, _ = make(name)
    assert not supports_ghost(model)
    with pytest.warns(FlatprivWarning, match="ghost clipping does not cover") as caught:  # says which layer
        assert clipped_grad(model, 1.0).method == "vmap"
    assert len(caught) == 1 and len(str(caught[0].message).splitlines()) == 1
    assert unsupported_parts(model)[0] in str(caught[0].message)
    with pytest.raises(ValueError, match="ghost"):
        clipped_grad(model, 1.0, method="ghost")
    check_against_loop(name, 20, methods=("auto",))


@pytest.mark.parametrize("name", RUNTIME_FALLBACK)
def test_runtime_detected_problem_switches_auto_to_vmap(name: str) -> None:
    torch.manual_seed(0)
    model, shape = make(name)
    params, (x, y) = params_of(model), batch(shape, 8)
    assert supports_ghost(model)
    with pytest.raises(ValueError, match="vmap"):
        clipped_grad(model, 1.0, method="ghost")(params, x, y)
    oracle = clipped_grad(model, 1.0)
    assert oracle.method == "ghost"
    with pytest.warns(FlatprivWarning, match="per-example gradients") as caught:
        out, _ = oracle(params, x, y)
    assert len(caught) == 1 and len(str(caught[0].message).splitlines()) == 1
    assert oracle.method == "vmap"
    grads, norms = naive(model, params, x, y)
    assert_trees_close(out, naive_clipped(params, grads, norms, 1.0), atol=1e-10, rtol=1e-7)


@pytest.mark.parametrize("name", ["tied_head", "forward_bypass"])
def test_without_the_check_ghost_would_silently_miss_a_parameter_use(name: str, monkeypatch) -> None:
    """The failure the check exists for: with it disabled, the ghost sum of a tied model is wrong."""
    import flatpriv.privacy.clipping as clipping

    monkeypatch.setattr(clipping, "_check_every_use", lambda *a: None)
    torch.manual_seed(0)
    model, shape = make(name)
    params, (x, y) = params_of(model), batch(shape, 8)
    out, _ = clipped_grad(model, math.inf, method="ghost")(params, x, y)
    grads, norms = naive(model, params, x, y)
    expected = naive_clipped(params, grads, norms, math.inf)
    assert max(float((out[k] - expected[k]).norm() / expected[k].norm()) for k in out) > 0.05


def test_the_check_runs_once_and_passes_on_supported_models() -> None:
    torch.manual_seed(0)
    model, shape = make("twice")
    params, (x, y) = params_of(model), batch(shape, 8)
    oracle = clipped_grad(model, 1.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatprivWarning)
        oracle(params, x, y)
        oracle(params, x, y)
    assert oracle.method == "ghost" and oracle._verified


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
@pytest.mark.parametrize("method", ["ghost", "vmap"])
def test_float32_matches_loop_to_1e5(name: str, method: str) -> None:
    torch.manual_seed(1)
    model, shape = make(name)
    model = model.float()
    params, (x, y) = params_of(model), batch(shape, 64, torch.float32)
    grads, norms = naive(model, params, x, y)
    for c in (float(norms.median()), math.inf):
        out, _ = clipped_grad(model, c, method)(params, x, y)
        assert_trees_close(out, naive_clipped(params, grads, norms, c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "embedding", "resnet"])
@pytest.mark.parametrize("method", ["ghost", "vmap"])
def test_infinite_clip_norm_is_batch_times_mean_gradient(name: str, method: str) -> None:
    torch.manual_seed(2)
    model, shape = make(name)
    params, (x, y) = params_of(model), batch(shape, 12)
    out, info = clipped_grad(model, math.inf, method)(params, x, y)
    mean, loss = mean_grad(model)(params, x, y)
    assert_trees_close(out, {k: 12 * v for k, v in mean.items()}, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(info.loss, loss)
    assert float(info.clipped_fraction) == 0.0


@pytest.mark.parametrize("name", ["mlp", "conv1d"])  # no GroupNorm: a huge input gives a huge gradient
@pytest.mark.parametrize("method", ["ghost", "vmap"])
def test_neighbouring_batches_move_the_sum_by_at_most_c(name: str, method: str) -> None:
    torch.manual_seed(3)
    model, shape = make(name)
    params, c = params_of(model), 0.2
    oracle = clipped_grad(model, c, method)
    for trial in range(6):
        x, y = batch(shape, 16)
        extra_x, extra_y = batch(shape, 1)
        adversarial = trial % 2 == 1
        if adversarial:  # a huge input with the least likely label: a gradient norm far above C
            extra_x = extra_x * 1e3
            extra_y = functional_call(model, params, (extra_x,)).argmin(1)
        base, _ = oracle(params, x, y)
        added, info = oracle(params, torch.cat([x, extra_x]), torch.cat([y, extra_y]), return_norms=True)
        removed, _ = oracle(params, x[1:], y[1:])
        for other in (added, removed):
            assert float(norm(add(other, base, alpha=-1.0))) <= c * (1 + 1e-9)
        if adversarial:
            assert float(info.norms[-1]) > 5 * c
            assert float(norm(add(added, base, alpha=-1.0))) > 0.999 * c  # the bound is tight: clipping is active


@pytest.mark.parametrize("name", ["cnn1d", "embedding"])
@pytest.mark.parametrize("method", ["ghost", "vmap"])
def test_perturbed_params_give_gradient_there_and_leave_model_untouched(name: str, method: str) -> None:
    torch.manual_seed(4)
    model, shape = make(name)
    params, (x, y) = params_of(model), batch(shape, 10)
    eps = {k: 0.3 * torch.randn_like(v) for k, v in params.items()}
    before = params_of(model)
    oracle = clipped_grad(model, 0.5, method)
    at_w, _ = oracle(params, x, y)
    at_w_eps, _ = oracle(add(params, eps), x, y)
    grads, norms = naive(model, add(params, eps), x, y)
    assert_trees_close(at_w_eps, naive_clipped(params, grads, norms, 0.5), atol=1e-10, rtol=1e-7)
    assert float(norm(add(at_w_eps, at_w, alpha=-1.0))) > 1e-3
    assert_trees_close(params_of(model), before, atol=0.0, rtol=0.0)
    assert all(p.grad is None for p in model.parameters())


def test_return_norms_off_and_bad_arguments() -> None:
    model, shape = make("mlp")
    params, (x, y) = params_of(model), batch(shape, 4)
    _, info = clipped_grad(model, 1.0)(params, x, y)
    assert info.norms is None and info.batch_size == 4
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="clip_norm"):
            clipped_grad(model, bad)
    with pytest.raises(ValueError, match="method"):
        clipped_grad(model, 1.0, method="opacus")


def test_evaluator_equals_functional_call_and_always_restores_the_weights():
    """tree.Evaluator (the DP steps' cheap functional_call): same logits at another tree, the model's own
    Parameters back in place afterwards, also when the forward raises; tied weights go through functional_call."""
    from torch.func import functional_call

    from flatpriv.tree import Evaluator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    own = dict(model.named_parameters())
    other = {k: torch.randn_like(v) for k, v in own.items()}
    x = torch.randn(5, 4)
    call = Evaluator(model)
    torch.testing.assert_close(call(other, x), functional_call(model, other, (x,)), rtol=0, atol=0)
    assert all(p is own[k] for k, p in model.named_parameters())
    with pytest.raises(RuntimeError):
        call(other, torch.randn(5, 7))  # wrong input width: the forward raises inside the swap
    assert all(p is own[k] and isinstance(p, torch.nn.Parameter) for k, p in model.named_parameters())
    tied = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    tree = {"0.weight": torch.randn(4, 4)}
    torch.testing.assert_close(Evaluator(tied)(tree, x), functional_call(tied, tree, (x,)))
