"""Run configuration: nested frozen dataclasses and their validation (presets and overrides: config_io.py).

Every section is a frozen dataclass so a resolved config can be hashed, saved with each run (config.json) and
read back exactly. Validation happens once, here, so the rest of the code can trust its input.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import FlatprivError


@dataclass(frozen=True)
class DataConfig:
    """Which data set, and how it is generated or read.

    ``seed`` is the data set's own seed (generation, splits, label noise); it is separate from the training
    seed so that models trained with different seeds see the same data.
    """

    name: str = "mnist1d"  # mnist1d | digits | synthetic-longtail | mnist | fashion-mnist | cifar10 | user (fit)
    root: str = ""  # directory holding mnist / fashion-mnist / cifar10 in torchvision's file layout
    seed: int = 0
    num_samples: int = 5000  # mnist1d: train + test examples (80/20 split, as mnist1d's default 4000/1000)
    label_noise: float = 0.0  # fraction p of training labels flipped symmetrically
    limit_train: int = 0  # keep only the first n training examples (0: all)
    # synthetic-longtail: a Gaussian mixture with a common mode per class and rare sub-populations
    num_classes: int = 10
    dim: int = 32
    typical_per_class: int = 200  # training examples drawn from each class's common mode
    rare_groups_per_class: int = 5  # rare sub-populations per class
    rare_size: int = 2  # training examples per rare sub-population
    test_per_class: int = 100  # typical test examples per class
    rare_test_size: int = 1  # test examples per rare sub-population
    separation: float = 3.0  # std of the mode centres (each drawn from N(0, separation² I)); within-mode std 1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. No BatchNorm anywhere: it couples examples, which per-example DP and vmap forbid."""

    name: str = "mlp"  # mlp | cnn1d | cnn2d | resnet | user (a module given to flatpriv.fit; the rest unused)
    width: int = 256  # mlp hidden units; base channels for the CNNs and the ResNet
    depth: int = 2  # mlp hidden layers; conv blocks for cnn1d/cnn2d; residual stages for resnet
    norm: str = "group"  # group | none (conv models and resnet; the mlp has no normalisation)
    groups: int = 8  # GroupNorm groups
    activation: str = "relu"  # relu | gelu | tanh


@dataclass(frozen=True)
class OptimConfig:
    """The descent step: any stock ``torch.optim`` optimizer fed with the algorithm's gradient.

    Weight decay lives here, inside the base optimizer, so it is never part of SAM's or VaSSO's g or d.
    """

    name: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # constant | cosine (per step, to 0 at the last step)
    betas: tuple[float, float] = (0.9, 0.999)  # adam only


@dataclass(frozen=True)
class SharpnessConfig:
    """Parameters of the SAM family (science.md §1): ρ, VaSSO's θ, ASAM's η, SharpReg's λ, and GSAM's, LookSAM's
    and FriendlySAM's own (defaults: pytorch-optimizer 4.1.0's and the papers', docs/sam_variants.md)."""

    rho: float = 0.05
    theta: float = 0.9
    asam_eta: float = 0.01
    sharpreg_lambda: float = 1.0
    rho_schedule: str = "constant"  # gsam: constant | lr (ρ_t = rho_min + (ρ − rho_min)·η_t/η_0, GSAM's schedule)
    rho_min: float = 0.0  # gsam with rho_schedule = lr: ρ at η = 0
    gsam_alpha: float = 0.4  # GSAM's α (pytorch-optimizer's default)
    looksam_k: int = 5  # LookSAM: a full SAM gradient every k steps (the paper's k = 5)
    looksam_alpha: float = 0.7  # LookSAM's α (the paper's and pytorch-optimizer's)
    looksam_layerwise: bool = False  # true: g_v and its scale per parameter tensor, as pytorch-optimizer computes them
    fsam_sigma: float = 1.0  # FriendlySAM's σ: d = g − σ m (0: SAM)
    fsam_lambda: float = 0.9  # FriendlySAM's λ: m ← λ m + (1 − λ) g


@dataclass(frozen=True)
class SWAConfig:
    """Stochastic weight averaging (Izmailov et al. 2018) for ``algorithm = "swa"``: the run trains with the row
    ``base`` and keeps the running mean of its weights at the end of every epoch from epoch ⌊start·E⌋ + 1 on;
    those averaged weights are what the run evaluates and saves."""

    base: str = "sgd"  # the non-private row underneath: sgd, sam, gsam, looksam, friendlysam, vasso, ...
    start: float = 0.75  # fraction of the epochs before averaging starts (the paper: the last 25 % of the budget)
    lr: float = 0.0  # > 0: constant learning rate from the SWA start on (the paper's SWA lr); 0: keep the schedule


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy for the DP algorithms (science.md §2); ignored by the non-private ones.

    Give either ``target_epsilon`` (σ is calibrated so that the run's ε never exceeds it) or
    ``noise_multiplier`` σ. The noise on a clipped sum is N(0, σ²C²I); the sum is divided by the EXPECTED batch
    size q·N. ε is reported for add/remove-one neighbours by the chosen accountant.
    """

    target_epsilon: float = 0.0  # > 0: calibrate σ for this ε over the whole run
    noise_multiplier: float = 0.0  # σ, used when target_epsilon is 0
    delta: float = 1e-5
    clip_norm: float = 1.0  # C
    sample_rate: float = 0.0  # Poisson rate q; 0: train.batch_size / N (batch_size is the expected batch)
    accountant: str = "pld"  # pld | rdp
    noise_seed: int = -1  # -1: noise and sampling seeded from OS entropy; >= 0: reproducible (research only)
    clip_method: str = "auto"  # auto | ghost | vmap
    physical_batch_size: int = 0  # largest micro-batch evaluated at once (0: the whole logical batch)
    allow_large_delta: bool = False  # true: accept δ ≥ 1/N (such a δ permits publishing an example outright)
    secure_rng: bool = False  # true: noise and Poisson sampling from os.urandom (secure, not repeatable)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (:mod:`flatpriv.data.augment`): per example, on the data's device, seeded by the
    run's seed, the step and the example's index; off by default (MNIST-1D, digits and the synthetic data train
    on the examples as they are). Inputs [C, H, W] are images; [C, L] and [L] are 1-D signals."""

    crop_padding: int = 0  # p > 0: a random crop of the input's size from the input zero-padded by p on each side
    flip: bool = False  # mirror the last axis (horizontal flip) with probability 1/2
    multiplicity: int = 1  # DP rows: K augmented copies per example, gradients averaged before clipping (De et al.)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 2048
    device: str = "cpu"  # cpu | cuda
    save_model: bool = True
    save_logits: bool = True
    curvature_every: int = 0  # > 0: input-loss curvature of the training set every k epochs (arrays/)
    curvature_probes: int = 10


@dataclass(frozen=True)
class Config:
    """A whole run. ``seed`` fixes weight initialisation and batch order (the data has its own seed)."""

    algorithm: str = "sgd"
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
    swa: SWAConfig = field(default_factory=SWAConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


USER = "user"  # data.name / model.name of a run whose model and data were passed to flatpriv.fit


# --- validation ---------------------------------------------------------------------------------------------


def _in(*allowed: object) -> typing.Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(str, allowed))}"


def _range(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> typing.Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        values = v if isinstance(v, tuple) else (v,)
        for x in values:
            if lo is not None and (x <= lo if lo_open else x < lo):
                break
            if hi is not None and (x >= hi if hi_open else x > hi):
                break
        else:
            return None
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        return f"must be in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"

    return check


# The ranges outside which a run makes no sense; each refused value names its key. Every integer has an upper
# bound too: a huge count would hang (epochs, probes) or exhaust memory (sizes, widths) long after the run
# directory was made. The bounds are generous (far beyond what a CPU or one GPU trains in a day), not tuned.
SEED_MAX = 2**32 - 1  # numpy's seeds; model k of a pool uses seed + k
MAX_EXAMPLES = 10**7  # a data set (or a batch of it) resident in memory
MAX_EPOCHS = 100_000
MAX_STEPS = 10**9  # a DP run's releases: PLD's grid grows with the step count (1e12 steps asks for 226 GiB)
_RULES: dict[str, typing.Callable[[Any], str | None]] = {
    "seed": _range(0, SEED_MAX),
    "data.seed": _range(0, SEED_MAX),
    "data.num_samples": _range(20, 10**6),  # mnist1d generates every example in Python
    "data.label_noise": _range(0, 1, hi_open=True),
    "data.limit_train": _range(0, MAX_EXAMPLES),
    "data.num_classes": _range(2, 1000),
    "data.dim": _range(1, 100_000),
    "data.typical_per_class": _range(1, 100_000),
    "data.rare_groups_per_class": _range(0, 1000),
    "data.rare_size": _range(1, 10_000),
    "data.test_per_class": _range(1, 100_000),
    "data.rare_test_size": _range(0, 10_000),
    "data.separation": _range(0, lo_open=True),
    "model.width": _range(1, 2**16),
    "model.depth": _range(0, 64),
    "model.norm": _in("group", "none"),
    "model.groups": _range(1, 2**16),
    "model.activation": _in("relu", "gelu", "tanh"),
    "optim.name": _in("sgd", "adam"),
    "optim.lr": _range(0, lo_open=True),
    "optim.momentum": _range(0, 1, hi_open=True),
    "optim.weight_decay": _range(0),
    "optim.schedule": _in("constant", "cosine"),
    "optim.betas": _range(0, 1, hi_open=True),
    "sharpness.rho": _range(0),
    "sharpness.theta": _range(0, 1, lo_open=True),
    "sharpness.asam_eta": _range(0),
    "sharpness.sharpreg_lambda": _range(0),
    "sharpness.rho_schedule": _in("constant", "lr"),
    "sharpness.rho_min": _range(0),
    "sharpness.gsam_alpha": _range(0),
    "sharpness.looksam_k": _range(1, MAX_STEPS),
    "sharpness.looksam_alpha": _range(0),
    "sharpness.fsam_sigma": _range(0),
    "sharpness.fsam_lambda": _range(0, 1, hi_open=True),
    "swa.start": _range(0, 1, hi_open=True),
    "swa.lr": _range(0),
    "privacy.target_epsilon": _range(0),
    "privacy.noise_multiplier": _range(0, 1e6),  # above 1e6 the accountant overflows
    "privacy.delta": _range(0, 1, lo_open=True, hi_open=True),
    "privacy.clip_norm": _range(0, lo_open=True),
    "privacy.sample_rate": _range(0, 1),
    "privacy.accountant": _in("pld", "rdp"),
    "privacy.noise_seed": _range(-1, SEED_MAX),
    "privacy.clip_method": _in("auto", "ghost", "vmap"),
    "privacy.physical_batch_size": _range(0, MAX_EXAMPLES),
    "augment.crop_padding": _range(0, 1024),
    "augment.multiplicity": _range(1, 256),
    "train.epochs": _range(1, MAX_EPOCHS),
    "train.curvature_every": _range(0, MAX_EPOCHS),
    "train.curvature_probes": _range(1, 1000),
    "train.batch_size": _range(1, MAX_EXAMPLES),
    "train.eval_batch_size": _range(1, MAX_EXAMPLES),
}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotated type; ints are accepted for floats, nothing else is converted."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        args = typing.get_args(typ)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise FlatprivError(f"{key}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(key, v, t) for v, t in zip(value, args))
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN passes every range check, and ±inf makes no setting meaningful
                raise FlatprivError(f"{key} = {value!r}: must be a finite number")
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise FlatprivError(f"{key}: expected {names.get(typ, typ)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise FlatprivError(f"unknown config key '{full}' (valid here: {', '.join(names)})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise FlatprivError(f"{full}: expected a table of settings, got {value!r}")
            kwargs[key] = _build(typ, value, f"{full}.")
            continue
        kwargs[key] = _coerce(full, value, typ)
        rule = _RULES.get(full)
        problem = rule(kwargs[key]) if rule else None
        if problem:
            raise FlatprivError(f"{full} = {value!r}: {problem}")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a validated Config; unknown keys, wrong types and out-of-range values raise FlatprivError."""
    if not isinstance(data, dict):
        raise FlatprivError(f"a config must be a table of settings, got {type(data).__name__}")
    return _build(Config, data, "")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v

    return plain(dataclasses.asdict(cfg))
