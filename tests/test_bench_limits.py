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
