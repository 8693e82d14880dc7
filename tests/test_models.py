"""Tests for flatpriv.models: shapes, no BatchNorm, vmap per-example grads, stacked models, errors, seeds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from flatpriv.config import ModelConfig
from flatpriv.errors import FlatprivError
from flatpriv.models import MODELS, build_model, count_parameters

SEQ = (40,)
IMAGES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CASES = [("mlp", SEQ), ("cnn1d", SEQ), ("cnn1d", (2, 40))] + [
    (name, shape) for name in ("mlp", "cnn2d", "resnet") for shape in IMAGES
]
SMALL = [("mlp", SEQ), ("cnn1d", SEQ), ("cnn2d", (1, 8, 8)), ("resnet", (3, 8, 8))]


def small_cfg(name: str, norm: str = "group", **kw) -> ModelConfig:
    width = 16 if name == "mlp" else 6  # 6 channels: gcd(8, 6) = 2 groups
    return ModelConfig(name=name, width=width, depth=kw.pop("depth", 3), norm=norm, groups=8, **kw)


@pytest.mark.parametrize("norm", ["group", "none"])
@pytest.mark.parametrize("name,shape", CASES)
def test_logits_shape_and_no_batchnorm(name: str, shape: tuple[int, ...], norm: str) -> None:
    torch.manual_seed(0)
    model = build_model(small_cfg(name, norm), shape, num_classes=7)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()
    modules = list(model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert not any(getattr(m, "inplace", False) for m in modules)
    assert list(model.buffers()) == []
    has_gn = any(isinstance(m, nn.GroupNorm) for m in modules)
    assert has_gn == (norm == "group" and name != "mlp")


@pytest.mark.parametrize("depth", [0, 1, 4])
@pytest.mark.parametrize("name,shape", CASES)
def test_other_depths(name: str, shape: tuple[int, ...], depth: int) -> None:
    model = build_model(small_cfg(name, depth=depth), shape, num_classes=3)
    assert model(torch.randn(2, *shape)).shape == (2, 3)


def test_cnn1d_accepts_channel_dim_and_any_width() -> None:
    for width in (1, 5, 32, 33):
        model = build_model(ModelConfig(name="cnn1d", width=width, depth=3), SEQ, 10)
        x = torch.randn(4, 40)
        assert torch.equal(model(x), model(x.unsqueeze(1)))


def test_mlp_depth0_is_linear() -> None:
    model = build_model(ModelConfig(name="mlp", depth=0), (1, 8, 8), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 64
    assert count_parameters(model) == 64 * 10 + 10


def test_parameter_counts() -> None:
    mlp = build_model(ModelConfig(name="mlp", width=256, depth=2), SEQ, 10)
    assert count_parameters(mlp) == (40 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    cnn = build_model(ModelConfig(name="cnn1d", width=32, depth=3), SEQ, 10)
    conv = (1 * 32 * 5 + 32) + 2 * (32 * 32 * 5 + 32)
    gn = 3 * 2 * 32
    head = 32 * 5 * 10 + 10  # length 40 -> 20 -> 10 -> 5
    assert count_parameters(cnn) == conv + gn + head


def test_cnn2d_skips_pooling_on_small_images() -> None:
    model = build_model(ModelConfig(name="cnn2d", width=4, depth=3), (1, 8, 8), 10)
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2  # 8 -> 4 -> 2, then no pool
    first = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    assert first.in_features == 16 * 2 * 2 and first.out_features == 128


def _per_example_loss(model: nn.Module):
    def loss(params, x, y):
        logits = functional_call(model, params, (x.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, y.unsqueeze(0))

    return loss


@pytest.mark.parametrize("name,shape", SMALL)
def test_vmap_per_example_grads_match_loop(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    model = build_model(small_cfg(name, depth=2), shape, num_classes=4)
    x, y = torch.randn(6, *shape), torch.randint(0, 4, (6,))
    params = {k: v.detach() for k, v in model.named_parameters()}
    per_ex = vmap(grad(_per_example_loss(model)), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, p in model.named_parameters():
            assert per_ex[k].shape == (6, *p.shape)
            torch.testing.assert_close(per_ex[k][i], p.grad, atol=1e-5, rtol=1e-4)
    # the gradients really differ between examples (the check above is not trivially satisfied)
    first = next(iter(per_ex.values()))
    assert not torch.allclose(first[0], first[1])


@pytest.mark.parametrize("name,shape", SMALL)
def test_stack_module_state_vmap(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    models = [build_model(small_cfg(name, depth=2), shape, num_classes=5) for _ in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def run(p, b, x):
        return functional_call(base, (p, b), (x,))

    x = torch.randn(4, *shape)
    out = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    assert out.shape == (3, 4, 5)
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(
    "name,shape,needle",
    [
        ("cnn2d", SEQ, "needs image inputs"),
        ("resnet", SEQ, "needs image inputs"),
        ("resnet", (2, 40), "needs image inputs"),
        ("cnn1d", (1, 28, 28), "needs sequence inputs"),
    ],
)
def test_mismatched_input_raises(name: str, shape: tuple[int, ...], needle: str) -> None:
    with pytest.raises(FlatprivError, match=needle) as info:
        build_model(ModelConfig(name=name), shape, 10)
    assert "\n" not in str(info.value) and str(shape) in str(info.value)


def test_unknown_names_raise() -> None:
    with pytest.raises(FlatprivError, match="mlp, cnn1d, cnn2d, resnet"):
        build_model(ModelConfig(name="vgg"), SEQ, 10)
    with pytest.raises(FlatprivError, match="relu, gelu, tanh"):
        build_model(ModelConfig(activation="swish"), SEQ, 10)
    with pytest.raises(FlatprivError, match="group, none"):
        build_model(ModelConfig(name="cnn1d", norm="batch"), SEQ, 10)
    assert MODELS == ("mlp", "cnn1d", "cnn2d", "resnet")


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_activations(activation: str) -> None:
    cls = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[activation]
    model = build_model(ModelConfig(name="cnn2d", width=4, depth=1, activation=activation), (1, 8, 8), 10)
    assert sum(isinstance(m, cls) for m in model.modules()) == 2


@pytest.mark.parametrize("name,shape", SMALL)
def test_seed_fixes_initial_parameters(name: str, shape: tuple[int, ...]) -> None:
    def init(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(small_cfg(name), shape, 10).parameters()]

    a, b, c = init(0), init(0), init(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
