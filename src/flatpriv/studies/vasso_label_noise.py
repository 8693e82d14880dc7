"""``flatpriv study vasso-label-noise``: paper 4's claim (Li & Giannakis, NeurIPS 2023), R7 of science.md §6.

Seed-sweep pools (keep fraction 1: model k trains on all the data with seed + k, so the optimizers are paired by
seed) of SGD, SAM and VaSSO at each θ, at each symmetric label-noise level, for the MLP and the 1-D CNN on
MNIST-1D. Beside the accuracy table: the final models' parameter-space sharpness (λ_max, tr ∇²L), the variance
of the perturbation direction along training (SAM's g_t against VaSSO's d_t, :mod:`.direction_trace`), and the
training accuracy on the flipped points (memorising the noise) against the clean ones.
"""

from __future__ import annotations

from typing import Any

from ..errors import FlatprivError
from .claims import Claim
from .runner import Stage, StudySpec
from .stages import training_stage

CLAIMS = [
    Claim(
        "R7",
        "4",
        "VaSSO ≥ SAM ≥ SGD, more so with label noise",
        "at 0/20/40 % noise: acc(VaSSO) − acc(SAM) ≥ 0 and acc(SAM) − acc(SGD) ≥ 0 (CI over seeds); gap at 40 % > "
        "gap at 0 %",
    )
]

ARCHS = {"mlp": "default", "cnn1d": "cnn1d"}  # model -> the preset it trains from

DEFAULTS: dict[str, Any] = {
    "archs": ["mlp", "cnn1d"],
    "noise_levels": [0.0, 0.2, 0.4],
    "rho": 0.05,
    "thetas": [0.4, 0.9],
    "judged_theta": 0.9,
    "seeds": 8,
    "num_samples": 5000,
    "mlp_epochs": 60,
    "cnn_epochs": 30,
    "trace": True,
    "sharpness_models": 3,
    "sharpness_subset": 1000,
    "sharpness_iters": 20,
    "sharpness_probes": 10,
    "resamples": 1000,
    "seed": 0,
}
QUICK: dict[str, Any] = {
    "noise_levels": [0.0, 0.4],
    "seeds": 3,
    "num_samples": 1000,
    "mlp_epochs": 3,
    "cnn_epochs": 2,
    "sharpness_models": 2,
    "sharpness_subset": 200,
    "sharpness_iters": 5,
    "sharpness_probes": 3,
    "resamples": 200,
}
REASONS = {
    "archs": "the issue's two models: MLP 2×256 (preset 'default') and 1-D CNN 3×32 with GroupNorm (preset 'cnn1d')",
    "noise_levels": "science.md §6.1: 0, 20 and 40 % symmetric noise (each flipped label moved to another class)",
    "rho": "science.md §1.2: ρ = 0.05 for SAM and VaSSO",
    "thetas": "VaSSO's θ: 0.9 (science.md §1.2's default) and 0.4 (heavier averaging); every point reported",
    "judged_theta": "the θ the claim is judged at: VaSSO's default 0.9; θ = 0.4 is reported beside it",
    "seeds": "≥ 8 seeds (the issue); pool model k has seed + k and the same k across optimizers (paired)",
    "num_samples": "MNIST-1D's default 4000 training / 1000 test examples",
    "mlp_epochs": "the 'default' preset's 60 epochs (SGD momentum 0.9, lr 0.1 cosine, wd 5e-4, batch 128)",
    "cnn_epochs": "the 'cnn1d' preset's 30 epochs (lr 0.05 cosine, otherwise as above)",
    "trace": "also train one run per optimizer, model and noise level with taps on g_t and d_t (seed 'seed')",
    "sharpness_models": "λ_max and tr ∇²L of the first models of each pool (seeds seed..seed+k−1)",
    "sharpness_subset": "a fixed random subset of the training set (the labels as trained on, noise included)",
    "sharpness_iters": "power-iteration steps for λ_max (tolerance 1e-3)",
    "sharpness_probes": "Rademacher probes for Hutchinson's trace (standard error reported)",
    "resamples": "bootstrap resamples for every CI",
    "seed": "training seed of model 0 (data seed 0 throughout: every model sees the same data and flips)",
}


def optimizers(s: dict[str, Any]) -> dict[str, list[str]]:
    """Optimizer label -> its overrides: sgd, sam, vasso-θ for each θ."""
    out = {"sgd": ["algorithm=sgd"], "sam": ["algorithm=sam", f"sharpness.rho={s['rho']}"]}
    for t in s["thetas"]:
        out[f"vasso-{t:g}"] = ["algorithm=vasso", f"sharpness.rho={s['rho']}", f"sharpness.theta={t}"]
    return out


def base(s: dict[str, Any], arch: str, noise: float) -> list[str]:
    epochs = s["mlp_epochs"] if arch == "mlp" else s["cnn_epochs"]
    return [
        f"data.num_samples={s['num_samples']}",
        f"data.label_noise={noise}",
        f"train.epochs={epochs}",
        f"seed={s['seed']}",
    ]


def pool_name(arch: str, opt: str, noise: float) -> str:
    return f"{arch}-{opt}-noise{round(noise * 100)}"


def check(s: dict[str, Any]) -> None:
    if not s["archs"] or any(a not in ARCHS for a in s["archs"]):
        raise FlatprivError(f"--set archs={s['archs']}: choose from {', '.join(ARCHS)}")
    if 0.0 not in s["noise_levels"] or 0.4 not in s["noise_levels"]:
        raise FlatprivError("--set noise_levels: the claim compares 0 % with 40 %; keep both")
    if any(not 0 <= p < 1 for p in s["noise_levels"]):
        raise FlatprivError("--set noise_levels: fractions in [0, 1)")
    if s["judged_theta"] not in s["thetas"] or any(not 0 < t <= 1 for t in s["thetas"]):
        raise FlatprivError("--set thetas / judged_theta: θ in (0, 1], and the judged θ must be one of thetas")
    if s["seeds"] < 2:
        raise FlatprivError("--set seeds: need at least 2 seeds for a CI")
    if not 0 <= s["sharpness_models"] <= s["seeds"]:
        raise FlatprivError("--set sharpness_models: between 0 and seeds")
    if s["sharpness_subset"] > s["num_samples"] * 4 // 5:
        raise FlatprivError("--set sharpness_subset: larger than the training set (80 % of num_samples)")


def stages(s: dict[str, Any]) -> list[Stage]:
    from .vasso_label_noise_measure import sharpness_stage, trace_stage

    check(s)
    out: list[Stage] = []
    for arch in s["archs"]:
        for p in s["noise_levels"]:
            for opt, over in optimizers(s).items():
                out.append(
                    training_stage(
                        pool_name(arch, opt, p),
                        base(s, arch, p) + over,
                        s["seeds"],
                        preset=ARCHS[arch],
                        keep_fraction=1.0,
                        save_weights=s["sharpness_models"] > 0,
                    )
                )
            if s["trace"]:
                out.append(Stage(f"trace-{arch}-noise{round(p * 100)}", trace_stage(arch, p), "run"))
        if s["sharpness_models"] > 0:
            out.append(Stage(f"sharpness-{arch}", sharpness_stage(arch), "analysis"))
    return out


STUDY = StudySpec(
    name="vasso-label-noise",
    title="VaSSO, SAM and SGD under label noise (paper 4: Li & Giannakis, NeurIPS 2023, arXiv 2309.15639)",
    description="paper 4's claim R7: test accuracy of SGD, SAM and VaSSO at 0, 20 and 40 % label noise on MNIST-1D "
    "(MLP and 1-D CNN, seed sweeps), with final sharpness, the perturbation direction's variance along training, "
    "and how much of the noise each optimizer memorises",
    claims=CLAIMS,
    defaults=DEFAULTS,
    quick=QUICK,
    reasons=REASONS,
    stages=stages,
    analysis=".vasso_label_noise_report",
)
