"""What a person watches while a command runs: progress bars on a terminal, and a run's per-epoch log lines.

Bars (:func:`bar`) are tqdm's, on stderr, with the count, the elapsed time and the ETA. They show only when
stderr is a terminal (tqdm's ``disable=None``; in Jupyter, tqdm.auto's widget) and the caller is not quiet, so
CI, ``2>file`` and ``--quiet``/``--json`` get nothing of them. A bar opened while another shows sits below it and
vanishes when it ends (``leave=None``): only the outermost bar of a command keeps its last line.

Log lines (:class:`Progress`, ``log_every``) are for logs and notebooks: one line per ``log_every`` epochs and one
after the last epoch, on stdout, written above any bar (``tqdm.write``) and flushed, so a log file has each line
when its epoch ends. They are printed whenever asked for, quiet or not.

Imports: errors only (and tqdm).
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from .errors import FlatprivError


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    initial: float = 0,
    quiet: bool = False,
    unit_scale: bool = False,
    bar_format: str | None = None,
) -> Any:
    """A tqdm bar on stderr when it is a terminal and ``quiet`` is false, else a silent one (same methods).

    ``initial``: work already done before this process (a resumed run's epochs, a study's cached stages), counted
    in the bar but not in its rate, so the ETA is that of the work left."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        unit_scale=unit_scale,
        bar_format=bar_format,
        disable=True if quiet else None,  # None: tqdm disables itself when stderr is not a terminal
        leave=None,  # keep the last line of the outermost bar only
        dynamic_ncols=True,
    )


def write(line: str) -> None:
    """One line on stdout, above any bar, flushed at once (a log file gets it now, not at exit)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def check_log_every(value: Any, where: str = "log_every") -> int:
    """``log_every`` as a count of epochs: a whole number >= 0 (0 or None: no log lines)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise FlatprivError(
            f"{where} = {value!r}: must be a whole number of epochs >= 0 (a line every N epochs; 0 or None: none)"
        )
    return int(value)


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10: train loss 0.4123, train accuracy 0.8812, test loss ..., epsilon 1.2345, 12.3 s``.

    The numbers of metrics.jsonl's line for that epoch: the test pair only with test data, ε only when the run has
    one (DP), and the wall time since the run started (a resumed run's earlier processes included).

    >>> epoch_line({"epoch": 3, "train_loss": 0.41234, "train_accuracy": 0.88, "test_loss": None,
    ...             "test_accuracy": None, "epsilon": 1.23456, "wall_seconds": 12.34}, 10)
    'epoch 3/10: train loss 0.4123, train accuracy 0.8800, epsilon 1.2346, 12.3 s'
    """
    parts = [f"train loss {record['train_loss']:.4f}", f"train accuracy {record['train_accuracy']:.4f}"]
    if record.get("test_accuracy") is not None:
        parts += [f"test loss {record['test_loss']:.4f}", f"test accuracy {record['test_accuracy']:.4f}"]
    if record.get("epsilon") is not None:
        parts.append(f"epsilon {record['epsilon']:.4f}")
    parts.append(f"{record['wall_seconds']:.1f} s")
    return f"epoch {record['epoch']}/{epochs}: " + ", ".join(parts)


@dataclass(frozen=True)
class Progress:
    """How a training run reports itself: its epoch bar (unless ``quiet``) and, every ``log_every`` epochs and
    after the last one, a log line (:func:`epoch_line`)."""

    quiet: bool = False
    log_every: int = 0

    @classmethod
    def of(cls, quiet: bool, log_every: Any, where: str = "log_every") -> Progress:
        return cls(bool(quiet), check_log_every(log_every, where))

    def epochs(self, name: str, start: int, epochs: int) -> Any:
        """The bar over epochs ``start`` .. ``epochs`` (a resumed run starts at its checkpoint's)."""
        return bar(range(start, epochs), desc=name, total=epochs, initial=start, unit="epoch", quiet=self.quiet)

    def epoch_done(self, epoch_bar: Any, record: dict[str, Any], epochs: int) -> None:
        """After an epoch's metrics and checkpoint are written: the bar's figures, and the log line when due."""
        post = {"train_acc": f"{record['train_accuracy']:.3f}"}
        if record.get("test_accuracy") is not None:
            post["test_acc"] = f"{record['test_accuracy']:.3f}"
        if record.get("epsilon") is not None:
            post["eps"] = f"{record['epsilon']:.3f}"
        epoch_bar.set_postfix(post, refresh=False)
        every, epoch = self.log_every, record["epoch"]
        if every and (epoch % every == 0 or epoch == epochs):
            write(epoch_line(record, epochs))


STEPS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Steps:
    """A bar over a few named steps of unequal cost (an analysis' phases): ``steps.next(name)`` ends the step
    before it and shows ``name`` as the one running; leaving the ``with`` block ends the last one."""

    def __init__(self, desc: str, total: int, quiet: bool = False) -> None:
        # no rate and no ETA: steps of unequal cost would make both wrong; the count and the elapsed time
        self.bar = bar(desc=desc, total=total, unit="step", quiet=quiet, bar_format=STEPS_FORMAT)
        self.running = False

    def next(self, name: str) -> None:
        if self.running:
            self.bar.update()
        self.running = True
        self.bar.set_postfix_str(name)

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self.running and kind is None:
            self.bar.update()
        self.bar.close()
