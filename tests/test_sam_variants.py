"""GSAM, LookSAM, FriendlySAM and SWA against independent references.

pytorch-optimizer 4.1.0 (a test-only dependency) is the reference for GSAM, FriendlySAM and LookSAM's per-tensor
form; LookSAM's default (the gradient as one vector, the paper's Algorithm 1) is checked against a transcription
of the paper written here; SWA against ``torch.optim.swa_utils.AveragedModel`` fed the run's epoch-end weights.
Reductions: GSAM α = 0, LookSAM k = 1 and FriendlySAM σ = 0 are SAM.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import numpy as np
import pytest
import pytorch_optimizer as po  # the reference, in the test extra: missing, this module fails to import (no skip)
import torch
import torch.nn.functional as F
from conftest import TINY, assert_pool_matches_single_runs, interrupt_after
from torch.func import functional_call

from flatpriv.config import Config, config_from_dict
from flatpriv.config_io import resolve
from flatpriv.data import load_data
from flatpriv.errors import FlatprivError
from flatpriv.pools import make_keep, train_models
from flatpriv.step import ALGORITHMS, take_step
from flatpriv.step.optim import lr_values
from flatpriv.train import resume, train

train_module = importlib.import_module("flatpriv.train")

STEPS, LR, MOMENTUM, WD = 25, 0.1, 0.9, 5e-4


@pytest.fixture
def float64():
    """The comparisons run in float64. In float32, LookSAM's g_v = g_s − proj is a difference of nearly equal
    vectors, so two correct implementations with a different order of operations drift apart by up to 1.5e-4 relative
    over 25 steps; in float64 they agree to ~1e-8 relative, a limit set by pytorch-optimizer computing the global
    gradient norm in float32 (``get_global_gradient_norm``), while a wrong rule moves weights by ≥ 1e-4."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(36, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 6, 6)),
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.GroupNorm(2, 4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    )


MODELS = {"mlp": _mlp, "cnn": _cnn}


def _batches(n: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(24, 36, generator=g), torch.randint(0, 3, (24,), generator=g)) for _ in range(n)]


def _cfg(algorithm: str, schedule: str = "constant", **sharp: object) -> Config:
    return config_from_dict({"algorithm": algorithm, "sharpness": sharp, "optim": {"lr": LR, "schedule": schedule}})


def _sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _ours(model: torch.nn.Module, cfg: Config, batches) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    pipe = ALGORITHMS[cfg.algorithm].pipeline(cfg, model, None, total_steps=len(batches))
    opt = _sgd(params.values())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, len(batches)) if cfg.optim.schedule == "cosine" else None
    state = pipe.init(params)
    for x, y in batches:
        state, _ = take_step(pipe, params, state, opt, x, y)
        if sched is not None:
            sched.step()
    return _weights(model)


def _closure_style(model: torch.nn.Module, opt, batches) -> dict[str, torch.Tensor]:
    """pytorch-optimizer's SAM-style API: gradients at w first, then step(closure) recomputes them."""
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()

        def closure(x=x, y=y) -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return _weights(model)


def _assert_close(a: dict, b: dict, atol: float = 1e-7) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-6 if atol else 0)


def _far(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("schedule", ["constant", "lr"])
def test_gsam_equals_pytorch_optimizer(arch, schedule, float64):
    rho, rho_min, alpha = 0.1, 0.02, 0.4
    batches = _batches()
    cfg = _cfg(
        "gsam", "cosine", rho=rho, gsam_alpha=alpha, rho_schedule=schedule, rho_min=rho_min if schedule == "lr" else 0
    )
    ours = _ours(MODELS[arch](), cfg, batches)
    model = MODELS[arch]()
    base = _sgd(model.parameters())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(base, len(batches))
    low = rho_min if schedule == "lr" else rho
    rho_sched = po.ProportionScheduler(sched, max_lr=LR, min_lr=0.0, max_value=rho, min_value=low)
    opt = po.GSAM(model.parameters(), base, model, rho_sched, alpha=alpha)
    for x, y in batches:
        opt.set_closure(F.cross_entropy, x, y)
        opt.step()
        sched.step()
        opt.update_rho_t()
    _assert_close(ours, _weights(model))
    sam = _ours(MODELS[arch](), _cfg("sam", "cosine", rho=rho), batches)
    assert _far(ours, sam) > 1e-4  # GSAM moved differently from SAM: the comparison has teeth


@pytest.mark.parametrize("arch", list(MODELS))
def test_friendlysam_equals_pytorch_optimizer(arch, float64):
    batches = _batches()
    ours = _ours(MODELS[arch](), _cfg("friendlysam", rho=0.1, fsam_sigma=1.0, fsam_lambda=0.9), batches)
    model = MODELS[arch]()
    opt = po.FriendlySAM(
        model.parameters(), torch.optim.SGD, rho=0.1, sigma=1.0, lmbda=0.9, lr=LR, momentum=MOMENTUM, weight_decay=WD
    )
    _assert_close(ours, _closure_style(model, opt, batches))
    assert _far(ours, _ours(MODELS[arch](), _cfg("sam", rho=0.1), batches)) > 1e-4


@pytest.mark.parametrize("arch", list(MODELS))
def test_looksam_layerwise_equals_pytorch_optimizer(arch, float64):
    batches = _batches()
    cfg = _cfg("looksam", rho=0.1, looksam_k=5, looksam_alpha=0.7, looksam_layerwise=True)
    ours = _ours(MODELS[arch](), cfg, batches)
    model = MODELS[arch]()
    opt = po.LookSAM(
        model.parameters(), torch.optim.SGD, rho=0.1, k=5, alpha=0.7, lr=LR, momentum=MOMENTUM, weight_decay=WD
    )
    _assert_close(ours, _closure_style(model, opt, batches))
    whole = _ours(MODELS[arch](), _cfg("looksam", rho=0.1, looksam_k=5, looksam_alpha=0.7), batches)
    assert _far(ours, whole) > 1e-2  # per tensor is not the paper's one-vector form (0.24 on the MLP)


def _looksam_paper(model: torch.nn.Module, batches, rho: float, k: int, alpha: float) -> dict[str, torch.Tensor]:
    """Liu et al. 2022, Algorithm 1, with the gradient as one flat vector: every k steps g = ∇L(w),
    g_s = ∇L(w + ρ g/‖g‖), g_v = g_s − ‖g_s‖ cos(θ) g/‖g‖ with cos θ = g·g_s/(‖g‖‖g_s‖); otherwise
    g_s = g + α (‖g‖/‖g_v‖) g_v. The base optimizer descends along g_s."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    opt = _sgd(model.parameters())

    def flat_grad(w: torch.Tensor, x, y) -> torch.Tensor:
        w = w.detach().requires_grad_(True)
        tree, i = {}, 0
        for n, s in zip(names, shapes):
            tree[n] = w[i : i + s.numel()].view(s)
            i += s.numel()
        (g,) = torch.autograd.grad(F.cross_entropy(functional_call(model, tree, (x,)), y), w)
        return g

    g_v = None
    for t, (x, y) in enumerate(batches):
        w = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        g = flat_grad(w, x, y)
        if t % k == 0:
            g_s = flat_grad(w + rho * g / g.norm(), x, y)
            cos = (g @ g_s) / (g.norm() * g_s.norm())
            g_v = g_s - g_s.norm() * cos * g / g.norm()
        else:
            g_s = g + alpha * (g.norm() / g_v.norm()) * g_v
        i = 0
        for p in model.parameters():
            p.grad = g_s[i : i + p.numel()].view_as(p).clone()
            i += p.numel()
        opt.step()
    return _weights(model)


@pytest.mark.parametrize("arch", list(MODELS))
def test_looksam_equals_the_papers_algorithm(arch, float64):
    batches = _batches()
    ours = _ours(MODELS[arch](), _cfg("looksam", rho=0.1, looksam_k=5, looksam_alpha=0.7), batches)
    _assert_close(ours, _looksam_paper(MODELS[arch](), batches, 0.1, 5, 0.7))
    assert _far(ours, _ours(MODELS[arch](), _cfg("sam", rho=0.1), batches)) > 1e-4


@pytest.mark.parametrize(
    "algorithm, sharp",
    [
        ("gsam", {"gsam_alpha": 0.0}),
        ("looksam", {"looksam_k": 1}),
        ("looksam", {"looksam_k": 1, "looksam_layerwise": True}),
        ("friendlysam", {"fsam_sigma": 0.0}),
    ],
)
def test_reductions_to_sam(algorithm, sharp):
    batches = _batches(8)
    sam = _ours(_mlp(), _cfg("sam", rho=0.2), batches)
    _assert_close(_ours(_mlp(), _cfg(algorithm, rho=0.2, **sharp), batches), sam, atol=0)  # the same operations: exact


def test_swa_lr_is_constant_from_the_swa_start():
    cfg = config_from_dict({"algorithm": "swa", "train": {"epochs": 4}, "swa": {"start": 0.5, "lr": 0.01}})
    lrs = lr_values(cfg, 40)  # 10 steps per epoch; averaging from epoch 2 (0-based), so the lr is 0.01 from step 20
    assert lrs[:20] == pytest.approx([0.05 * 0.5 * (1 + np.cos(np.pi * t / 40)) for t in range(20)])
    assert lrs[20:] == [pytest.approx(0.01)] * 20


def _epoch_weights(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The trained (not averaged) weights at the end of every epoch, as each epoch's checkpoint holds them."""
    seen: list[dict[str, torch.Tensor]] = []
    real = train_module.checkpoint.save

    def save(run_dir, content, cfg_dict):
        seen.append({k: v.clone() for k, v in content["model"].items()})
        real(run_dir, content, cfg_dict)

    monkeypatch.setattr(train_module.checkpoint, "save", save)
    return seen


@pytest.mark.parametrize("base", ["sgd", "looksam"])
def test_swa_saves_the_average_of_averagedmodel(tmp_path, monkeypatch, base):
    over = TINY + ["algorithm=swa", f"swa.base={base}", "swa.start=0.4", "swa.lr=0.02", "train.epochs=5"]
    cfg, _ = resolve(overrides=over)
    seen = _epoch_weights(monkeypatch)
    s = train(cfg, out=tmp_path, quiet=True)
    assert len(seen) == 5
    saved = torch.load(Path(s["run_dir"]) / "model.pt", weights_only=True)
    # AveragedModel over a module holding the same tensors, fed the epoch-end weights from ⌊0.4 · 5⌋ = 2 on
    holder = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v.clone()) for k, v in seen[0].items()})
    ref = torch.optim.swa_utils.AveragedModel(holder)
    for w in seen[2:]:
        snap = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v.clone()) for k, v in w.items()})
        ref.update_parameters(snap)
    for k, v in saved.items():
        torch.testing.assert_close(v, ref.module[k.replace(".", "_")].detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(v, sum(w[k] for w in seen[2:]) / 3, atol=1e-6, rtol=1e-5)
    assert _far(saved, seen[-1]) > 1e-4  # the average is not the last iterate
    # what the run reports is the averaged model's accuracy
    data = load_data(cfg.data)
    model = train_module.build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(saved)
    acc = (train_module.predict(model, data.x_test, 512).argmax(1) == data.y_test).float().mean().item()
    assert acc == pytest.approx(s["test_accuracy"], abs=1e-6)


def test_swa_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    cfg, _ = resolve(overrides=TINY + ["algorithm=swa", "swa.base=friendlysam", "swa.start=0.25", "train.epochs=4"])
    full = train(cfg, out=tmp_path / "a", quiet=True)
    interrupt_after(monkeypatch, train_module, "_save_checkpoint", 2)
    part = train(cfg, out=tmp_path / "b", quiet=True)
    assert part["finished"] is False
    done = resume(part["run_dir"], quiet=True)
    a = torch.load(Path(full["run_dir"]) / "model.pt", weights_only=True)
    b = torch.load(Path(done["run_dir"]) / "model.pt", weights_only=True)
    _assert_close(a, b, atol=0)


POOL_CASES = {
    "gsam-lr-schedule": (["algorithm=gsam", "sharpness.rho_schedule=lr", "sharpness.rho_min=0.02"], "exact"),
    "looksam": (["algorithm=looksam", "sharpness.looksam_k=3"], "bernoulli"),
    "friendlysam": (["algorithm=friendlysam", "sharpness.fsam_lambda=0.5"], "bernoulli"),
    "swa-sam": (["algorithm=swa", "swa.base=sam", "swa.start=0.3", "swa.lr=0.02", "train.epochs=3"], "bernoulli"),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_of_each_variant_equals_separate_runs(tmp_path, case):
    extra, mode = POOL_CASES[case]
    over = TINY + ["sharpness.rho=0.2", "train.batch_size=32"] + extra
    cfg, _ = resolve(overrides=over + ["seed=5"])
    data = load_data(cfg.data)
    keep = make_keep(3, len(data.y_train), 0.5, seed=30, mode=mode)
    pooled = train_models(cfg, data, keep, seeds=[5, 6, 7])
    assert_pool_matches_single_runs(pooled, over, keep, tmp_path)


def test_refusals_name_the_setting(tmp_path):
    cfg, _ = resolve(overrides=TINY + ["algorithm=gsam", "sharpness.rho_schedule=lr"])
    data = load_data(cfg.data)
    with pytest.raises(FlatprivError, match="rho_schedule"):
        train_models(cfg, data, make_keep(3, len(data.y_train), 0.5, seed=30, mode="bernoulli"), seeds=[0, 1, 2])
    for bad in ("swa", "dpsgd", "nope"):
        cfg, _ = resolve(overrides=TINY + ["algorithm=swa", f"swa.base={bad}"])
        with pytest.raises(FlatprivError, match="swa.base|algorithm"):
            train(cfg, out=tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists()
    model = copy.deepcopy(_mlp())
    with pytest.raises(FlatprivError, match="step count"):
        ALGORITHMS["gsam"].pipeline(_cfg("gsam", rho_schedule="lr"), model, None)


def test_sam_privacy_takes_the_new_rows_only_when_asked():
    from flatpriv.studies.sam_privacy import STUDY, pool_specs

    default = pool_specs(STUDY.settings(False, []))
    assert not any(n.endswith(("gsam", "looksam", "friendlysam", "swa", "swa-sam")) for n in default)
    s = STUDY.settings(True, ['extra_optimizers=["gsam", "looksam", "friendlysam", "swa", "swa-sam"]'])
    specs = pool_specs(s)
    for ds in s["datasets"]:
        for name, algorithm in [("gsam", "gsam"), ("looksam", "looksam"), ("friendlysam", "friendlysam")]:
            preset, over, models = specs[f"{ds}-{name}"]
            cfg, _ = resolve(preset=preset, overrides=over)
            assert cfg.algorithm == algorithm and cfg.sharpness.rho == s["rho"] and models == s["models"]
        cfg, _ = resolve(preset=specs[f"{ds}-swa-sam"][0], overrides=specs[f"{ds}-swa-sam"][1])
        assert (cfg.algorithm, cfg.swa.base) == ("swa", "sam")
    assert set(specs) - set(pool_specs(STUDY.settings(True, []))) == {
        f"{ds}-{n}" for ds in s["datasets"] for n in ("gsam", "looksam", "friendlysam", "swa", "swa-sam")
    }
    with pytest.raises(FlatprivError, match="extra_optimizers"):
        pool_specs(STUDY.settings(True, ['extra_optimizers=["adamw"]']))
