"""Command line: parse, build the config, call one library function, print.

Errors are one line on stderr with exit code 2 (a traceback only with --debug); ``--json`` prints exactly
one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

from ..errors import FlatprivError
from ..results import discard_on_os_error, dumps, os_error_text
from .allocator import keep_freed_memory, size_primitive_cache
from .parser import EXIT_USAGE, build_parser


def _one_line(e: BaseException) -> str:
    """What the user sees of an expected failure: one line, the file it concerns when there is one."""
    if isinstance(e, FlatprivError):
        text = str(e)
    elif isinstance(e, OSError):  # unwritable or full --out, unreadable input, ...
        text = os_error_text(e)
    elif isinstance(e, UnicodeDecodeError):
        text = f"a file is not UTF-8 text ({e.reason} at byte {e.start})"
    else:  # a corrupt file read by a library that did not say which
        text = f"corrupt or foreign file ({type(e).__name__}: {e})"
    return " ".join(text.split())


# Failures that come from the input or the machine, not from a bug: one line and exit code 2 (--debug: traceback).
_EXPECTED = (
    FlatprivError,
    OSError,
    UnicodeDecodeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
)


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"flatpriv: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # pools and long runs reuse freed blocks instead of faulting fresh pages in every step
    size_primitive_cache()  # before any convolution: Poisson batch sizes would otherwise recompile oneDNN's kernels
    if not args.debug:  # a warning is one line, like an error (with --debug: Python's own, with its location)
        warnings.formatwarning = _warning_line
    func: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    try:
        with discard_on_os_error():  # an analysis stopped by a full disk leaves no half-written directory
            result = func(args)
    except _EXPECTED as e:
        if args.debug:
            raise
        sys.stderr.write(f"flatpriv: error: {_one_line(e)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:  # outside a run's own loop (set-up, analyses): nothing resumable was left
        sys.stderr.write("flatpriv: interrupted\n")
        return 130
    if args.json:
        print(dumps(result))
    return 130 if result.get("finished") is False else 0  # an interrupted run says how to resume, then exits 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
