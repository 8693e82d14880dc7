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
