"""The machine's limits, measured in the benchmark's own run: FLOPs of a piece of work, the matmul peak for the
shapes that dominate it, and peak memory.

- :func:`count_flops` runs a callable once under ``torch.utils.flop_counter.FlopCounterMode`` and returns the
  FLOPs it counted (matmuls, convolutions and their backward; elementwise work is not counted, so the fraction
  of peak below is a lower bound on how busy the matmul units are).
- :func:`matmul_peak` times ``torch.bmm`` (or ``mm`` for one model) of the given shapes: the FLOP/s this machine
  reaches on exactly the products that dominate the work, the ceiling a pool or a DP step can approach.
- :func:`peak_memory` runs a callable in a fresh spawned process and returns its peak resident set (and on a GPU
  the CUDA allocator's maximum), so each variant is measured alone.
- :func:`add_allocator_flag` / :func:`apply_allocator`: every benchmark's ``--allocator keep|default`` and
  ``--primitive-cache command|default``; ``keep`` (the default) sets glibc's allocator and ``command`` (the
  default) sizes oneDNN's primitive cache as the ``flatpriv`` command does (``flatpriv.cli.allocator``);
  :func:`cache_capacity` is what the JSON records (None: oneDNN's default, 1,024).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from flatpriv.cli.allocator import keep_freed_memory, size_primitive_cache


def add_allocator_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--allocator",
        default="keep",
        choices=["keep", "default"],
        help="keep: glibc keeps freed memory for reuse, as the flatpriv command does (flatpriv.cli.allocator); "
        "default: glibc's defaults",
    )
    ap.add_argument(
        "--primitive-cache",
        default="command",
        choices=["command", "default"],
        help="command: oneDNN's primitive cache sized as the flatpriv command sizes it (flatpriv.cli.allocator); "
        "default: oneDNN's own capacity, unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set",
    )


def apply_allocator(a: argparse.Namespace) -> bool:
    """Apply ``--allocator`` and ``--primitive-cache`` (before any convolution runs); True when glibc took the
    allocator settings (the JSON's ``allocator_kept_freed_memory``)."""
    if a.primitive_cache == "command":
        size_primitive_cache()
    return keep_freed_memory() if a.allocator == "keep" else False


def cache_capacity() -> int | None:
    """oneDNN's primitive cache capacity this process was given (None: not set, so oneDNN's default)."""
    value = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", os.environ.get("DNNL_PRIMITIVE_CACHE_CAPACITY"))
    return None if value is None else int(value)


def step_header(a: argparse.Namespace, kept: bool, **extra: Any) -> dict[str, Any]:
    """The JSON head of an interleaved step benchmark (``step_time.add_timing_flags``'s arguments): the device,
    batch, steps, block, torch, ``extra`` (e.g. Opacus's version), threads and the allocator settings."""
    return {
        "device": str(torch.device(a.device)),
        "expected_batch_size": a.batch_size,
        "steps": a.steps,
        "block": a.block,
        "torch": torch.__version__,
        **extra,
        "threads": torch.get_num_threads(),
        "allocator_kept_freed_memory": kept,
        "onednn_primitive_cache_capacity": cache_capacity(),
    }


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as FlopCounterMode counts them (2·m·n·k per matmul, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(
    batch: int, m: int, k: int, n: int, device: str = "cpu", repeats: int = 30, dtype: torch.dtype = torch.float32
) -> dict[str, float]:
    """Median FLOP/s of ``bmm`` of [batch, m, k] @ [batch, k, n] (``mm`` when batch is 1) on ``device``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, m, k, generator=g, dtype=dtype).to(device)
    b = torch.randn(batch, k, n, generator=g, dtype=dtype).to(device)
    op = (lambda: a[0] @ b[0]) if batch == 1 else (lambda: torch.bmm(a, b))
    for _ in range(3):
        op()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        op()
        _sync(device)
        times.append(time.perf_counter() - t)
    flops = 2.0 * batch * m * k * n
    return {
        "shape": f"[{batch}, {m}, {k}] @ [{batch}, {k}, {n}]",
        "flops": flops,
        "flop_per_s": flops / statistics.median(times),
    }


def _child(fn: Callable[[], Any], queue: Any, keep: bool) -> None:
    if keep:
        keep_freed_memory()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    fn()
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    queue.put({"peak_rss_mib": _peak_rss_mib(), "cuda_max_allocated_mib": cuda})


def _peak_rss_mib() -> float:
    """This process's peak resident set. On Linux ``VmHWM`` of /proc/self/status: ``ru_maxrss`` survives
    ``execve``, so in a spawned child it reports the parent's resident set at the fork when that was larger."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(fn: Callable[[], Any], keep: bool = False) -> dict[str, float | None]:
    """Peak RSS (MiB) of a fresh process that runs ``fn`` (a picklable, module-level callable), and on a GPU the
    CUDA allocator's maximum; the process's own start-up (Python, torch) is included in the RSS. ``keep``: the
    process first sets the allocator as ``--allocator keep`` does (freed memory kept counts in its RSS)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue, keep))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"the measured process failed (exit code {proc.exitcode})")
    return queue.get(timeout=10)
