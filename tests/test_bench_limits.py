"""benchmarks/limits.py against closed forms: the FLOPs of a product, and a child's peak memory that is its own
(not the parent's resident set at the fork, which ``ru_maxrss`` reports after ``execve``)."""

from __future__ import annotations

import functools
import pathlib
import platform
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from limits import count_flops, peak_memory  # noqa: E402


def test_flops_of_a_product_are_2mnk() -> None:
    a, b = torch.randn(32, 48), torch.randn(48, 64)
    assert count_flops(lambda: a @ b) == 2 * 32 * 48 * 64


@pytest.mark.skipif(platform.system() != "Linux", reason="VmHWM is Linux's")
def test_peak_memory_is_the_childs_own() -> None:
    held = torch.ones(400 << 18)  # the parent holds 400 MiB while the children run
    small = peak_memory(functools.partial(torch.ones, 8 << 18))["peak_rss_mib"]
    large = peak_memory(functools.partial(torch.ones, 300 << 18))["peak_rss_mib"]
    assert small is not None and large is not None
    assert 280 < large - small < 320  # the 300 MiB tensor, and nothing of the parent's 400 MiB
    assert small < 400
    del held


def test_split_gap_recovers_planted_lines() -> None:
    """dp_batch.split_gap on medians laid on known lines: t_sgd = 2 + 0.03 B ms, t_dp = 3 + 0.04 B ms, so at
    B* = 256, t_sgd = 9.68 ms, fixed share = 1 / 9.68 and per-example share = 256 · 0.01 / 9.68."""
    from dp_batch import split_gap

    sizes = [32, 64, 128, 256]
    out = split_gap(sizes, [2 + 0.03 * b for b in sizes], [3 + 0.04 * b for b in sizes])
    assert out["fit"]["sgd"]["fixed_ms"] == pytest.approx(2.0, abs=1e-3)
    assert out["fit"]["dpsgd"]["per_example_us"] == pytest.approx(40.0, abs=1e-2)
    assert out["fixed_share"] == pytest.approx(1 / 9.68, abs=1e-3)
    assert out["per_example_share"] == pytest.approx(2.56 / 9.68, abs=1e-3)
    assert out["dpsgd_over_sgd"] == pytest.approx(13.24 / 9.68, abs=1e-3)
    assert out["fixed_share"] + out["per_example_share"] == pytest.approx(out["dpsgd_over_sgd"] - 1, abs=2e-3)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (torch.nn.Conv1d(1, 6, 5, stride=2, padding=2), (1, 12)),
        (torch.nn.Conv1d(3, 4, 3, stride=1, padding=1, dilation=2), (3, 9)),
        (torch.nn.Conv1d(3, 5, 2, bias=False), (3, 7)),
        (torch.nn.GroupNorm(2, 4), (4, 6)),
    ],
)
def test_norm_floor_alternatives_equal_per_example_gradients(layer: torch.nn.Module, shape: tuple) -> None:
    """Every method ``dp_parts.py`` times for the norm floor gives ‖∇_θ ℓ_i‖² of a per-example autograd loop."""
    from norm_floor import alternatives

    torch.manual_seed(0)
    layer = layer.double()
    for p in layer.parameters():  # GroupNorm starts at γ = 1, β = 0: move off them
        torch.nn.init.normal_(p)
    x = torch.randn(5, *shape, dtype=torch.float64)
    target = torch.randn_like(layer(x))
    expected = []
    for i in range(len(x)):
        grads = torch.autograd.grad((layer(x[i : i + 1]) * target[i : i + 1]).sum(), list(layer.parameters()))
        expected.append(sum(g.square().sum() for g in grads))
    out = layer(x)
    methods = alternatives(layer, x, target)
    assert methods and out.shape == target.shape  # the loss Σ out·target has output gradient g = target
    for name, method in methods.items():
        torch.testing.assert_close(method(), torch.stack(expected), msg=name)


def test_profile_difference_per_operator() -> None:
    from profile_dp import added, per_step

    class Event:  # what torch.profiler's key_averages() yields: a key, total self CPU µs and a call count
        def __init__(self, key: str, us: float, count: int) -> None:
            self.key, self.self_cpu_time_total, self.count = key, us, count

    base = per_step([Event("aten::mm", 800.0, 16), Event("aten::normal_", 400.0, 12)], steps=2)
    other = per_step([Event("aten::mm", 900.0, 16), Event("aten::_foreach_norm", 60.0, 2)], steps=2)
    assert base == {"aten::mm": (400.0, 8.0), "aten::normal_": (200.0, 6.0)}
    rows = added(base, other, rows=3)
    assert rows == [
        ("aten::mm", 50.0, 8.0, 8.0),
        ("aten::_foreach_norm", 30.0, 0.0, 1.0),
        ("aten::normal_", -200.0, 6.0, 0.0),
    ]
    assert added(base, other, rows=1) == rows[:1]


def test_dpsat_point_variants_take_the_same_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """dpsat_point.py's four DP-SAT variants (the library's, its point timed part by part, its point prepared
    after the optimizer step, and before the step outside the timer) end at the same weights, and both prepared
    variants take a prepared point at every timed step (the untimed first step makes the first release)."""
    import dpsat_point
    from step_time import MODELS

    import flatpriv.step.dp as dp_module
    from flatpriv.config import DataConfig
    from flatpriv.data import load_data

    probe = dpsat_point.Probe(dp_module.perturb)
    monkeypatch.setattr(dp_module, "perturb", probe.perturb)
    data = load_data(DataConfig(name="mnist1d"))
    batches = [(data.x_train[i : i + 64], data.y_train[i : i + 64]) for i in range(0, 384, 64)]
    row = dpsat_point.measure(probe, MODELS["mlp"], data, batches, warmup=2, device=torch.device("cpu"))
    assert row["same_weights"]
    assert row["prepared_points_used"] == 2 * len(batches)  # after an untimed first step: one per batch, each
    assert len(probe.parts["total"]) == len(batches)


def test_dpsat_point_refuses_a_stale_prepared_point() -> None:
    import dpsat_point

    import flatpriv.step.dp as dp_module
    from flatpriv.step.transforms import normalize

    probe = dpsat_point.Probe(dp_module.perturb)
    params, g = {"w": torch.zeros(2)}, {"w": torch.tensor([3.0, 4.0])}
    sentinel = {"w": torch.full((2,), 7.0)}
    probe.prepared[id(params)] = (g, [params["w"]._version], sentinel)
    assert probe.perturb(normalize(radius=0.03), g, (), params)[0] is sentinel
    params["w"].add_(1.0)  # the weights moved after the point was prepared
    point, _ = probe.perturb(normalize(radius=0.03), g, (), params)
    torch.testing.assert_close(point["w"], torch.tensor([1.018, 1.024]))
    assert probe.hits == 1


@pytest.mark.parametrize("block", [1, 3])
def test_interleaving_steps_every_variant_on_every_batch_in_blocks(block: int) -> None:
    """step_time._time_interleaved: every variant steps every batch once, in order; with ``block`` B the calls come
    in runs of B consecutive batches per variant; untimed work runs before each step of its variant only; the
    first ``warmup`` batches are not timed."""
    from step_time import _time_interleaved

    calls: list[tuple[str, int]] = []
    steps = {name: functools.partial(lambda name, x, y: calls.append((name, int(x))), name) for name in "abc"}
    untimed = {"b": lambda: calls.append(("untimed", -1))}
    batches = [(torch.tensor(i), None) for i in range(7)]
    times = _time_interleaved(steps, batches, torch.device("cpu"), warmup=2, untimed=untimed, block=block)
    stepped = [c for c in calls if c[0] != "untimed"]
    for name in "abc":
        assert [i for n, i in stepped if n == name] == list(range(7))
        assert len(times[name]) == 5
    runs = [stepped[j : j + block] for j in range(0, 6 * 3, block)][: 6 // block * 3]  # whole blocks only
    assert all(len({n for n, _ in run}) == 1 for run in runs)  # one variant per run of B calls
    assert all(calls[j + 1][0] == "b" for j, c in enumerate(calls) if c[0] == "untimed")
    assert sum(c[0] == "untimed" for c in calls) == 7
