"""The parsers of the analyses of a finished run or pool: memorization, attack, curvature, sharpness."""

from __future__ import annotations

from typing import Any

from ..config import SEED_MAX
from . import commands as c
from .args import analysis_args, at_most, common, finite, quiet


def add_analysis_parsers(sub: Any) -> None:
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
    analysis_args(p)
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
    analysis_args(p)
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
    analysis_args(p)
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
    quiet(p)
    common(p)
    p.set_defaults(func=c.cmd_sharpness)
