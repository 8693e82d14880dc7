"""Process-wide memory settings made once, at the command line's start: glibc keeps freed memory for reuse, and
oneDNN's primitive cache holds every batch size a Poisson-sampled run meets.

With glibc's defaults a freed block of a few MiB goes back to the operating system (an ``mmap``'d block, or the
heap's top trimmed), so the next step's tensor of the same size is fresh memory, and every page of it faults on
first touch. A pool of 64 MLPs allocates such blocks (its [64, 128, 256] activations are 8 MiB) in every step;
keeping them made no measurable difference on an idle machine and the pool about 20 % faster on a loaded one,
for a few MiB of peak memory (docs/benchmarks.md has the A/B runs). The settings: blocks under 64 MiB come from
the heap, and up to 1 GiB of free memory at its top is kept (256 MiB padding per growth). Freed memory is still
reused inside the process; what is kept is returned only when the process ends.

Imports: nothing of flatpriv (the benchmarks call it too). Linux with glibc only; elsewhere, with
``FLATPRIV_KEEP_FREED_MEMORY=0``, or when any ``MALLOC_*`` variable is set (the user's own allocator settings
win), nothing is changed.

oneDNN (PyTorch's CPU convolutions) builds a primitive, JIT-compiled code, for each shape it meets and keeps the
last 1,024 in a cache. Under Poisson sampling the batch size differs between steps (a run at expected batch 256
meets about 90-200 sizes), and a 1-D CNN's step needs about a dozen primitives per size, so the default cache
evicts what the next steps need and they are compiled again. :func:`size_primitive_cache` raises the capacity to
:data:`PRIMITIVE_CACHE_CAPACITY` through ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, which oneDNN reads when it creates its
first primitive, so it takes effect only when called before the process's first convolution; the user's own
``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` (or the older ``DNNL_`` name) wins. docs/benchmarks.md has the A/B runs.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
SETTINGS = ((_M_MMAP_THRESHOLD, 64 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))
PRIMITIVE_CACHE_CAPACITY = 8192
_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` through ``mallopt``; True when every setting was taken."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("FLATPRIV_KEEP_FREED_MEMORY") == "0" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def size_primitive_cache() -> bool:
    """Set oneDNN's primitive cache capacity to :data:`PRIMITIVE_CACHE_CAPACITY`; True when it was set here
    (False when the user set it). It has effect only before the process's first oneDNN primitive."""
    if any(k in os.environ for k in _CACHE_VARIABLES):
        return False
    os.environ[_CACHE_VARIABLES[0]] = str(PRIMITIVE_CACHE_CAPACITY)
    return True
