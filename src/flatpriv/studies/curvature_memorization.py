"""``flatpriv study curvature-memorization``: paper 2's claims (Ravikumar et al., input-loss curvature, memorization
and differential privacy), R3a, R3b, R4a and R4b of science.md §6.

An SGD pool with exact half masks gives Feldman–Zhang memorization; input-loss curvature is measured three ways
(one full-data model averaged over checkpoints taken during training, the pool's models aggregated over the models
holding each example, each of the variants 'norm', 'squared', 'trace'); full-data runs and pools with 1, 5 and 10 %
symmetric label noise test whether curvature finds the flipped labels; DP-SGD pools at each ε and a non-private
pool on a larger MNIST-1D test whether memorization and curvature rise with ε and stay under 1 − e^{−ε}.
"""

from __future__ import annotations

from typing import Any

from ..errors import FlatprivError
from .claims import Claim
from .runner import Stage, StudySpec
from .stages import training_stage

CLAIMS = [
    Claim(
        "R3a",
        "2",
        "curvature tracks memorization",
        "Spearman(curvature, FZ mem) > 0, CI over training points; report Pearson and cosine too",
    ),
    Claim(
        "R3b",
        "2",
        "curvature finds mislabelled examples",
        "AUROC(curvature → flipped) ≥ 0.9 at 10 % symmetric noise (CI over examples)",
    ),
    Claim(
        "R4a",
        "2",
        "memorization rises with ε and obeys the bound",
        "Spearman(ε, mean mem) > 0 over the ε grid and mean mem ≤ 1 − e^{−ε} at every ε",
    ),
    Claim(
        "R4b",
        "2",
        "curvature rises with ε",
        "Spearman(ε, mean curvature) > 0 over the ε grid; fitted (a + b e^{−cε})(1 − e^{−ε}) drawn",
    ),
]

DEFAULTS: dict[str, Any] = {
    "dataset": "mnist1d",
    "data_root": "",
    "samples": 5000,
    "models": 128,
    "epochs": 30,
    "width": 256,
    "lr": 0.1,
    "batch_size": 128,
    "curvature_every": 3,
    "probes": 10,
    "noise_levels": [0.01, 0.05, 0.1],
    "noise_models": 64,
    "dp_samples": 50000,
    "dp_epsilons": [0.5, 1.0, 2.0, 5.0, 10.0, 50.0],
    "dp_models": 32,
    "dp_epochs": 10,
    "dp_width": 128,
    "dp_batch_size": 512,
    "dp_lr": 0.5,
    "nonprivate_lr": 0.1,
    "clip_norm": 1.0,
    "delta": 1e-5,
    "dp_curvature_examples": 2000,
    "resamples": 1000,
    "seed": 0,
}
QUICK: dict[str, Any] = {
    "samples": 2000,
    "models": 8,
    "epochs": 4,
    "width": 32,
    "curvature_every": 2,
    "probes": 4,
    "noise_models": 6,
    "dp_samples": 4000,
    "dp_epsilons": [1.0, 5.0, 20.0],
    "dp_models": 6,
    "dp_epochs": 2,
    "dp_width": 32,
    "dp_batch_size": 256,
    "dp_curvature_examples": 300,
    "resamples": 200,
}
REASONS = {
    "dataset": "MNIST-1D (science.md §6: offline); digits, synthetic-longtail, or an image set from data_root "
    "(mnist, fashion-mnist, cifar10: use --device cuda and --set width/dp_width for a CNN-sized budget); every part, "
    "the DP pools included, uses it, and samples / dp_samples apply to MNIST-1D only",
    "data_root": "directory holding the image sets in torchvision's file layout (never downloaded)",
    "samples": "MNIST-1D's own default size: 4000 train / 1000 test",
    "models": "≥ 128 pool models (issue); exact half masks, so each example is IN for 64 models and OUT for 64",
    "epochs": "SGD interpolates each 2000-example half in 30 epochs (as in sam-privacy)",
    "width": "MLP 2 × 256, overparameterised enough to interpolate (the default preset)",
    "lr": "the default preset's lr (momentum 0.9, cosine, weight decay 5e-4)",
    "batch_size": "the default preset's batch",
    "curvature_every": "curvature of the full-data model every 3 epochs, averaged over training (science.md §3.3: "
    "end-of-training curvature falls while overfitting)",
    "probes": "Rademacher probes per example, h = 1e-3 (the authors' n = 10)",
    "noise_levels": "the issue's 1, 5 and 10 % symmetric label noise",
    "noise_models": "pool size for FZ memorization of the noisy data sets (the comparison score): half the main pool",
    "dp_samples": "≥ 40 000 training examples for DP to learn (issue): 50 000 MNIST-1D = 40 000 train / 10 000 test, "
    "20 000 per model",
    "dp_epsilons": "the issue's ε grid (δ below), every point reported; plus a non-private pool (ε = ∞)",
    "dp_models": "a DP pool of 20 000-example models costs ≈ 5× a main-pool model: 32 keeps the study in an hour",
    "dp_epochs": "the DP pools' epochs (paper 2: 20 on CIFAR; half here for the hour)",
    "dp_width": "MLP 2 × 128: DP-SGD learns better with fewer parameters at this data size",
    "dp_batch_size": "expected batch 512 on 20 000 examples: q ≈ 0.026",
    "dp_lr": "the dpsgd preset's lr 0.5 (constant, momentum 0.9, no weight decay)",
    "nonprivate_lr": "the non-private pool of the DP grid: SGD with the default preset's lr 0.1, constant, the same "
    "data, model, batch and epochs (unclipped gradients at lr 0.5 are another experiment)",
    "clip_norm": "C = 1.0 (paper 2's DP setting)",
    "delta": "δ = 1e-5 (paper 2), < 1/N; ε by PLD, add/remove-one",
    "dp_curvature_examples": "curvature of the DP pools on a fixed random subset of the training set (every model "
    "scores it; the mean is over models holding each example): the cost of 40 000 examples × 32 models × 7 pools "
    "would exceed the hour",
    "resamples": "bootstrap resamples for every CI",
    "seed": "data seed and pool seed (model k has seed + k)",
}


def _data(s: dict[str, Any], samples: int) -> list[str]:
    if s["dataset"] == "mnist1d":
        return [f"data.num_samples={samples}"]
    return [f"data.name={s['dataset']}", *([f"data.root={s['data_root']}"] if s["data_root"] else [])]


def _base(s: dict[str, Any]) -> list[str]:
    return [
        *_data(s, s["samples"]),
        f"model.width={s['width']}",
        "model.depth=2",
        f"optim.lr={s['lr']}",
        f"train.batch_size={s['batch_size']}",
        f"train.epochs={s['epochs']}",
        f"seed={s['seed']}",
    ]


def _dp_base(s: dict[str, Any]) -> list[str]:
    return [
        *_data(s, s["dp_samples"]),
        f"model.width={s['dp_width']}",
        "model.depth=2",
        f"train.batch_size={s['dp_batch_size']}",
        f"train.epochs={s['dp_epochs']}",
        "optim.schedule=constant",
        "optim.weight_decay=0",
        f"seed={s['seed']}",
    ]


def specs(s: dict[str, Any]) -> dict[str, tuple[str, list[str], int]]:
    """Every training stage: name -> (kind 'run' | 'pool', overrides on the default preset, models)."""
    if s["dataset"] not in ("mnist1d", "digits", "synthetic-longtail", "mnist", "fashion-mnist", "cifar10"):
        raise FlatprivError(f"--set dataset={s['dataset']!r}: not a data set flatpriv knows")
    if s["curvature_every"] < 1 or s["curvature_every"] > s["epochs"]:
        raise FlatprivError("--set curvature_every: must be between 1 and epochs (curvature kept during training)")
    if 0.1 not in s["noise_levels"] or any(not 0 < p < 0.9 for p in s["noise_levels"]):
        raise FlatprivError("--set noise_levels: each in (0, 0.9), and 0.1 among them (R3b is judged at 10 %)")
    if len(s["dp_epsilons"]) < 3 or any(e <= 0 for e in s["dp_epsilons"]):
        raise FlatprivError("--set dp_epsilons: at least 3 positive ε (a rank correlation over the grid)")
    if min(s["models"], s["noise_models"], s["dp_models"]) < 4:
        raise FlatprivError("--set models / noise_models / dp_models: a pool needs at least 4 models here")
    curv = [f"train.curvature_every={s['curvature_every']}", f"train.curvature_probes={s['probes']}"]
    out: dict[str, tuple[str, list[str], int]] = {
        "full-run": ("run", _base(s) + curv, 1),
        "pool": ("pool", _base(s), s["models"]),
    }
    for p in s["noise_levels"]:
        noisy = _base(s) + [f"data.label_noise={p}"]
        out[f"noise{p:g}-run"] = ("run", noisy + curv, 1)
        out[f"noise{p:g}-pool"] = ("pool", noisy, s["noise_models"])
    dp = _dp_base(s) + [f"privacy.clip_norm={s['clip_norm']}", f"privacy.delta={s['delta']}", "optim.momentum=0.9"]
    for eps in s["dp_epsilons"]:
        out[f"dp-eps{eps:g}"] = (
            "pool",
            dp + ["algorithm=dpsgd", f"privacy.target_epsilon={eps}", f"optim.lr={s['dp_lr']}"],
            s["dp_models"],
        )
    out["dp-nonprivate"] = ("pool", _dp_base(s) + ["algorithm=sgd", f"optim.lr={s['nonprivate_lr']}"], s["dp_models"])
    return out


def stages(s: dict[str, Any]) -> list[Stage]:
    from .curvature_memorization_measure import measure_stage

    trained = [
        training_stage(name, over, models if kind == "pool" else None, save_weights=True)
        for name, (kind, over, models) in specs(s).items()
    ]
    return [*trained, Stage("measure", measure_stage, "analysis")]


STUDY = StudySpec(
    name="curvature-memorization",
    title="Input-loss curvature, memorization and differential privacy (paper 2: Ravikumar et al.)",
    description="paper 2's claims R3a–R4b: curvature against Feldman–Zhang memorization (three ways, three "
    "variants), curvature finding mislabelled examples, and memorization and curvature against ε under DP-SGD",
    claims=CLAIMS,
    defaults=DEFAULTS,
    quick=QUICK,
    reasons=REASONS,
    stages=stages,
    analysis=".curvature_memorization_report",
)
