"""The command line's process settings: a freed block stays in the process (glibc's default returns it), oneDNN
compiles each primitive once however many batch sizes a run meets (its default cache recompiles them), and the
user's own settings win. Each check runs in a fresh interpreter, since both settings are the whole process's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from flatpriv.cli.allocator import PRIMITIVE_CACHE_CAPACITY, keep_freed_memory, size_primitive_cache

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Frees a touched 48 MiB block (above glibc's largest dynamic mmap threshold, 32 MiB, so by default it is
# munmap'd on free) and prints whether the setting was taken and how much resident memory the free gave back.
PROBE = """
import ctypes, os
from flatpriv.cli.allocator import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
n = 48 << 20
p = libc.malloc(n)
libc.memset(p, 1, n)
before = rss()
libc.free(p)
print(kept, before - rss())
"""


def _probe(**env: str) -> tuple[bool, int]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "FLATPRIV_KEEP_FREED_MEMORY"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_block_stays_in_the_process() -> None:
    kept, returned = _probe()
    assert kept and returned < (4 << 20)
    kept, returned = _probe(FLATPRIV_KEEP_FREED_MEMORY="0")  # glibc's defaults: the reference behaviour
    assert not kept and returned > (40 << 20)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_users_malloc_variables_win() -> None:
    kept, returned = _probe(MALLOC_ARENA_MAX="2")
    assert not kept and returned > (40 << 20)


def test_opt_out_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLATPRIV_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


# Convolutions (forward and both backward passes) at 400 batch sizes, twice: 6-7 distinct oneDNN primitives a size
# (the count depends on the CPU: 958 for 160 sizes on one machine, 1,117 on another), so about 2,400-2,800, more
# than oneDNN's default cache of 1,024. oneDNN's verbose mode logs each primitive's creation as a cache hit or
# miss; the first argument says whether to apply the command's setting first.
CACHE_PROBE = """
import sys
from flatpriv.cli.allocator import size_primitive_cache
applied = size_primitive_cache() if sys.argv[1] == "1" else False
import torch
conv = torch.nn.Conv1d(2, 4, 3)
for _ in range(2):
    for b in range(1, 401):
        conv(torch.randn(b, 2, 16, requires_grad=True)).sum().backward()
print("applied", applied, file=sys.stderr)
"""


def _cache_probe(apply: bool, **env: str) -> tuple[bool, int, int]:
    """(setting applied, primitives created, distinct primitives) in a fresh interpreter."""
    base = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    run = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE, "1" if apply else "0"],
        env={**base, "ONEDNN_VERBOSE": "profile_create", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    # a creation line ends with its creation time; what comes before it names the primitive
    misses = [line.rsplit(",", 1)[0] for line in run.stdout.splitlines() if ",create:cache_miss," in line]
    return "applied True" in run.stderr, len(misses), len(set(misses))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")
def test_each_primitive_is_compiled_once() -> None:
    applied, created, distinct = _cache_probe(True)
    assert distinct > 1024, f"the probe needs more primitives than oneDNN's default cache holds; it made {distinct}"
    assert applied and created == distinct
    applied, created, distinct = _cache_probe(False)  # oneDNN's default cache: the reference behaviour
    assert not applied and created > distinct + 500


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")
def test_users_cache_capacity_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    applied, created, distinct = _cache_probe(True, ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")
    assert not applied and created > distinct + 500
    monkeypatch.setenv("DNNL_PRIMITIVE_CACHE_CAPACITY", "16")
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert size_primitive_cache() is False
    monkeypatch.delenv("DNNL_PRIMITIVE_CACHE_CAPACITY")
    assert size_primitive_cache() is True and os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(
        PRIMITIVE_CACHE_CAPACITY
    )
