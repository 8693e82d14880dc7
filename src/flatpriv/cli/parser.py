"""The argparse parser: one small function per command group, errors as one line (exit code 2)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..config import MAX_EPOCHS, MAX_STEPS, SEED_MAX
from . import commands as c
from .study import add_parser as add_study_parser

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar (one shows, with its ETA, on a terminal)")


def _analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", metavar="DIR", help="parent directory for the new run directory")
    _quiet(p)
    _common(p)


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
    _quiet(p)


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
    _common(p)
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
    _common(p)
    p.set_defaults(func=c.cmd_pool)


def _analyses_parsers(sub: Any) -> None:
    """memorization, attack, curvature and sharpness: analyses of a finished run."""
    p = sub.add_parser(
        "memorization",
        help="Feldman-Zhang memorization, influence and influence entropy of a pool",
        description="Per-example Feldman-Zhang memorization (with standard errors; NaN where an "
        "example was never in or never out), the test x train influence matrix, and paper 1's "
        "influence entropy per test point (a reconstruction). With --compare, test accuracy of both "
        "pools per entropy bucket and the difference with bootstrap 95%% CIs. Results go to a new "
        "run directory (arrays/, plots/memorization_hist.png, summary.json).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished pool (flatpriv pool)")
    p.add_argument("--compare", metavar="RUN_DIR", help="a second pool on the same data (e.g. SAM against SGD)")
    p.add_argument(
        "--kind",
        choices=["correct", "prob"],
        default="correct",
        help="0/1 correctness (default) or the probability of the true label",
    )
    p.add_argument("--buckets", type=at_most(1000), default=5, help="equal-count influence-entropy buckets (default 5)")
    _analysis_args(p)
    p.set_defaults(func=c.cmd_memorization)

    p = sub.add_parser(
        "attack",
        help="membership inference (thresholds, LiRA, RMIA) and privacy audits of pools",
        description="Membership inference on finished pools: each model in turn is the target, the "
        "others its references. Global and per-class thresholds, LiRA online/offline (the paper's "
        "variants and the reference code's), RMIA online/offline against the test set. Reports AUC, "
        "balanced accuracy, TPR at 0.1%% and 1%% FPR (bootstrap CIs, with the member/non-member "
        "counts), the one-run audit's epsilon lower bound with its ceiling (Steinke et al. 2023; "
        "pools made with --keep-mode bernoulli --keep 0.5), the Clopper-Pearson bound over all "
        "(model, example) pairs (a heuristic), a log-log ROC overlay and per-example vulnerability.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished pools on the same data")
    p.add_argument(
        "--bootstrap", type=at_most(100_000), default=200, metavar="B", help="bootstrap resamples for CIs (200)"
    )
    p.add_argument(
        "--references",
        metavar="R1,R2,...",
        help="also run LiRA and RMIA with that many random reference models per target (e.g. 1,2,4,8,16): "
        "AUC and TPR@1%% FPR against the count in summary.json and plots/references.png",
    )
    p.add_argument("--rmia-gamma", type=float, default=2.0, metavar="G", help="RMIA's gamma (2, the paper's code)")
    p.add_argument(
        "--rmia-a",
        default="0.3",
        metavar="A",
        help="offline RMIA's a in [0, 1] (0.3, the paper's CIFAR-10 value), or 'auto': chosen on one reference "
        "model as Privacy Meter does",
    )
    p.add_argument("--rmia-temperature", type=float, default=1.0, metavar="T", help="RMIA's softmax temperature (1)")
    p.add_argument(
        "--seed", type=at_most(SEED_MAX), default=0, help="seed of the bootstrap and of the reference subsets (0)"
    )
    _analysis_args(p)
    p.set_defaults(func=c.cmd_attack)

    p = sub.add_parser(
        "curvature",
        help="per-example input-loss curvature of a run or a pool",
        description="Input-loss curvature per training example (Hutchinson with finite "
        "differences, eval mode, summed loss): 'norm' (default, the authors' code), 'squared' "
        "(~tr(H^2)) or 'trace' (~tr(H)); --method hvp uses exact Hessian-vector products. For a pool "
        "trained with --save-weights: mean and max over the models holding each example, and the "
        "Spearman correlation with the pool's memorization.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run or pool")
    p.add_argument("--variant", choices=["norm", "squared", "trace"], default="norm")
    p.add_argument("--method", choices=["finite_difference", "hvp"], default="finite_difference")
    p.add_argument("--probes", type=at_most(1000), default=10, help="Rademacher probes per example (10)")
    p.add_argument("--h", type=finite, default=1e-3, help="finite-difference step (1e-3)")
    p.add_argument("--seed", type=at_most(SEED_MAX), default=0, help="seed of the probes")
    _analysis_args(p)
    p.set_defaults(func=c.cmd_curvature)

    p = sub.add_parser(
        "sharpness",
        help="largest Hessian eigenvalue and Hessian trace of a run's training loss",
        description="Parameter-space sharpness of a finished single run's final model (model.pt): "
        "lambda_max of the training-loss Hessian by power iteration on Hessian-vector products, and "
        "its trace by Hutchinson (Rademacher probes, mean and standard error), over the run's training "
        "set or a fixed random subset of it, in float32, eval mode. Writes nothing; --json prints the "
        "summary.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run (flatpriv train)")
    p.add_argument("--subset", type=at_most(10**9), metavar="N", help="N random training examples (seeded)")
    p.add_argument("--iters", type=at_most(100_000), default=100, metavar="K", help="power iterations at most (100)")
    p.add_argument("--tol", type=finite, default=1e-4, help="relative change of lambda that stops them (1e-4)")
    p.add_argument("--probes", type=at_most(100_000), default=100, metavar="P", help="Hutchinson probes (100)")
    p.add_argument("--seed", type=at_most(SEED_MAX), default=0, help="seed of the subset, start vector, probes (0)")
    p.add_argument(
        "--batch-size", type=at_most(10**9), metavar="B", help="evaluation batch (default: train.eval_batch_size)"
    )
    _quiet(p)
    _common(p)
    p.set_defaults(func=c.cmd_sharpness)


def _privacy_parsers(sub: Any) -> None:
    """flatpriv privacy epsilon | calibrate."""
    p = sub.add_parser("privacy", help="privacy accounting: epsilon of a run, or the noise for a target epsilon")
    psub = p.add_subparsers(dest="privacy_command", metavar="WHAT", parser_class=_Parser)
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
        _common(q)
        q.set_defaults(func=c.cmd_privacy)


def _listings_parsers(sub: Any) -> None:
    """flatpriv presets and flatpriv algorithms."""
    p = sub.add_parser("presets", help="list the presets with a one-line description each")
    _common(p)
    p.set_defaults(func=c.cmd_presets)

    p = sub.add_parser(
        "algorithms",
        help="list the algorithms (sgd, sam, ..., gsam, looksam, friendlysam, swa, the DP rows) and update rules",
    )
    _common(p)
    p.set_defaults(func=c.cmd_algorithms)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flatpriv",
        description=(
            "Train with flat-minima optimizers (SGD, SAM, VaSSO, ASAM, SharpReg, GSAM, LookSAM, FriendlySAM, "
            "SWA over any of them), privately or not, "
            "and measure memorization and privacy. Every run writes a new directory under --out."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _train_parsers(sub)
    _pool_parsers(sub)
    _analyses_parsers(sub)
    _privacy_parsers(sub)
    add_study_parser(sub, _common)
    _listings_parsers(sub)
    return parser
