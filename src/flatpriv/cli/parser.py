"""The argparse parser: one small function per command group, errors as one line (exit code 2)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import MAX_EPOCHS, MAX_STEPS
from . import commands as c
from .analysis_parsers import add_analysis_parsers
from .args import EXIT_USAGE, Parser, at_most, common, finite, quiet

__all__ = ["EXIT_USAGE", "build_parser"]
from .study import add_parser as add_study_parser


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", metavar="NAME", help="a preset from `flatpriv presets` (default: 'default')")
    g.add_argument("--config", metavar="FILE", help="a TOML config file (same keys as the presets)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set optim.lr=0.1 --set sharpness.rho=0.1 (repeatable)",
    )
    p.add_argument(
        "--out", default="runs", metavar="DIR", help="parent directory for the new run directory (default: runs)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="shortcut for --set train.device=...")
    quiet(p)


def _train_parsers(sub: Any) -> None:
    """flatpriv train."""
    p = sub.add_parser(
        "train",
        help="train one model and write a run directory",
        description="Train one model; the run directory gets config.json, provenance.json, "
        "metrics.jsonl (one line per epoch), summary.json, model.pt and arrays/ (per-example "
        "logits and labels). Without --preset or --config the 'default' preset is used. On a terminal a bar "
        "shows the epochs with the ETA (stderr); --log-every N prints a line every N epochs for log files.",
    )
    _config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument(
        "--log-every",
        type=at_most(MAX_EPOCHS),
        default=0,
        metavar="N",
        help="print a line every N epochs and after the last (epoch, train loss and accuracy, test loss and "
        "accuracy, epsilon when DP, seconds) on stdout, for log files; also with --quiet (default 0: none)",
    )
    common(p)
    p.set_defaults(func=c.cmd_train)


def _pool_parsers(sub: Any) -> None:
    """flatpriv pool."""
    p = sub.add_parser(
        "pool",
        help="train K models on random halves of the training set (memorization, LiRA)",
        description="Train a pool of K models of one architecture at once (vectorized over a model "
        "axis), model k on its own random subset of the training set with seed seed + k: exactly "
        "--keep of it, or with --keep-mode bernoulli each example independently with probability "
        "--keep (subset sizes, step counts and schedules then differ per model, as in separate "
        "runs). Any algorithm, Noisy-SGD and the DP ones included. Writes arrays/keep.npy [K, N], "
        "per-model train/test logits (float32), models.jsonl and summary.json; finished chunks "
        "survive a kill (--resume). DP and Noisy-SGD pools give every model its own noise (noise "
        "seed noise_seed + 2k; DP: its own Poisson batches too) and DP pools report the epsilon each "
        "model has (models.jsonl has each model's own). On a terminal a bar shows the chunks with the ETA, and "
        "under it the running chunk's epochs (steps for DP pools).",
    )
    _config_args(p)
    # Pool-shape options default to None so that `--resume` can tell they were given (and refuse them).
    p.add_argument("--models", type=at_most(10_000), metavar="K", help="number of models (default 16)")
    p.add_argument(
        "--keep",
        type=finite,
        metavar="R",
        help="fraction of examples per model (0.5); 1: every model on all examples, a seed sweep",
    )
    p.add_argument(
        "--keep-mode",
        choices=["exact", "bernoulli"],
        help="exact: every model keeps round(R*N) examples (default); bernoulli: each example joins "
        "each model with probability R (LiRA's masks)",
    )
    p.add_argument(
        "--chunk-size",
        type=at_most(10_000),
        metavar="C",
        help="models trained at once (default: as many as fit the memory budget, at most 64)",
    )
    p.add_argument(
        "--memory-budget",
        type=finite,
        metavar="GIB",
        help="memory for one chunk, in GiB (default: half the device's free memory); chunks are sized "
        "from an estimate of each model's weights, optimizer state, activations and logits",
    )
    p.add_argument("--save-weights", action="store_true", help="also keep every model's weights (in chunks/)")
    p.add_argument(
        "--canaries",
        type=at_most(10**7),
        metavar="N",
        help="mislabel N training examples (in every model) so `flatpriv attack` can audit them alone",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="train chunks here (default) or as Ray tasks (pip install 'flatpriv[ray]')",
    )
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start a local Ray instance)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted pool")
    common(p)
    p.set_defaults(func=c.cmd_pool)


def _privacy_parsers(sub: Any) -> None:
    """flatpriv privacy epsilon | calibrate."""
    p = sub.add_parser("privacy", help="privacy accounting: epsilon of a run, or the noise for a target epsilon")
    psub = p.add_subparsers(dest="privacy_command", metavar="WHAT", parser_class=Parser)
    psub.required = True
    for what, helptext in (
        ("epsilon", "epsilon of T Poisson-subsampled Gaussian steps (dp-accounting)"),
        ("calibrate", "smallest noise multiplier whose epsilon does not exceed the target"),
    ):
        q = psub.add_parser(what, help=helptext, description=helptext + "; add/remove-one neighbours.")
        if what == "epsilon":
            q.add_argument("--noise-multiplier", type=finite, required=True, metavar="S", help="sigma")
        else:
            q.add_argument("--target-epsilon", type=finite, required=True, metavar="E")
        q.add_argument("--sample-rate", type=finite, required=True, metavar="Q", help="Poisson rate q = batch/N")
        q.add_argument("--steps", type=at_most(MAX_STEPS), required=True, metavar="T")
        q.add_argument("--delta", type=finite, default=1e-5, metavar="D", help="default 1e-5")
        q.add_argument("--accountant", choices=["pld", "rdp"], default="pld", help="default pld (tight)")
        q.add_argument("--releases-per-step", type=at_most(16), default=1, metavar="R", help="2 for DP-SAM (default 1)")
        common(q)
        q.set_defaults(func=c.cmd_privacy)


def _listings_parsers(sub: Any) -> None:
    """flatpriv presets and flatpriv algorithms."""
    p = sub.add_parser("presets", help="list the presets with a one-line description each")
    common(p)
    p.set_defaults(func=c.cmd_presets)

    p = sub.add_parser(
        "algorithms",
        help="list the algorithms (sgd, sam, ..., gsam, looksam, friendlysam, swa, the DP rows) and update rules",
    )
    common(p)
    p.set_defaults(func=c.cmd_algorithms)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="flatpriv",
        description=(
            "Train with flat-minima optimizers (SGD, SAM, VaSSO, ASAM, SharpReg, GSAM, LookSAM, FriendlySAM, "
            "SWA over any of them), privately or not, "
            "and measure memorization and privacy. Every run writes a new directory under --out."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    _train_parsers(sub)
    _pool_parsers(sub)
    add_analysis_parsers(sub)
    _privacy_parsers(sub)
    add_study_parser(sub, common)
    _listings_parsers(sub)
    return parser
