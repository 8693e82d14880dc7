"""The command line's allocator setting: a freed block stays in the process (glibc's default returns it), and the
user's own settings win. Each check runs in a fresh interpreter, since ``mallopt`` changes the whole process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from flatpriv.cli.allocator import keep_freed_memory

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
