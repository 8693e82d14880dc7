"""The CLI's shared argument types and option groups (one place, so every command spells them alike)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of argparse's usage block
        sys.stderr.write(f"flatpriv: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USAGE)


def at_most(hi: int) -> Callable[[str], int]:
    """argparse type for an integer option with an upper bound: a huge count would hang or exhaust memory
    (a 10**12-model keep mask, 10**12 bootstrap resamples) long after the run directory was made."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {text}")
        return value

    parse.__name__ = "integer"  # what argparse names in "invalid integer value"
    return parse


def finite(text: str) -> float:
    """argparse type for every float option: NaN and ±inf pass any later ``<``/``>`` check, so refuse them here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")


def quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar (one shows, with its ETA, on a terminal)")


def analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", metavar="DIR", help="parent directory for the new run directory")
    quiet(p)
    common(p)
