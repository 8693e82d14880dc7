"""Run configuration: nested frozen dataclasses, TOML presets, ``--set a.b=value`` overrides, validation.

Every section is a frozen dataclass so a resolved config can be hashed, saved with each run (config.json) and
read back exactly. Validation happens once, here, so the rest of the code can trust its input.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FlatprivError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "default"


@dataclass(frozen=True)
class DataConfig:
    """Which data set, and how it is generated or read.

    ``seed`` is the data set's own seed (generation, splits, label noise); it is separate from the training
    seed so that models trained with different seeds see the same data.
    """

    name: str = "mnist1d"  # mnist1d | digits | synthetic-longtail | mnist | fashion-mnist | cifar10
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

    name: str = "mlp"  # mlp | cnn1d | cnn2d | resnet
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
    """Parameters of the SAM family (science.md §1): ρ, VaSSO's θ, ASAM's η, SharpReg's λ."""

    rho: float = 0.05
    theta: float = 0.9
    asam_eta: float = 0.01
    sharpreg_lambda: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 2048
    device: str = "cpu"  # cpu | cuda
    save_model: bool = True
    save_logits: bool = True


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
    train: TrainConfig = field(default_factory=TrainConfig)


# --- validation ---------------------------------------------------------------------------------------------

def _in(*allowed: object) -> typing.Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(str, allowed))}"


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> typing.Callable[[Any], str | None]:
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


# The ranges outside which a run makes no sense; each refused value names its key.
_RULES: dict[str, typing.Callable[[Any], str | None]] = {
    "seed": _range(0),
    "data.seed": _range(0),
    "data.num_samples": _range(20),
    "data.label_noise": _range(0, 1, hi_open=True),
    "data.limit_train": _range(0),
    "data.num_classes": _range(2),
    "data.dim": _range(1),
    "data.typical_per_class": _range(1),
    "data.rare_groups_per_class": _range(0),
    "data.rare_size": _range(1),
    "data.test_per_class": _range(1),
    "data.rare_test_size": _range(0),
    "data.separation": _range(0, lo_open=True),
    "model.width": _range(1),
    "model.depth": _range(0),
    "model.norm": _in("group", "none"),
    "model.groups": _range(1),
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
    "train.epochs": _range(1),
    "train.batch_size": _range(1),
    "train.eval_batch_size": _range(1),
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
    return _build(Config, data, "")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v
    return plain(dataclasses.asdict(cfg))


# --- presets, files and overrides ---------------------------------------------------------------------------

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FlatprivError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise FlatprivError(f"{path} is not valid TOML: {e}") from e


def preset_dict(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise FlatprivError(f"no preset named '{name}' (see `flatpriv presets`: {', '.join(preset_names())})")
    return _read_toml(path)


def describe_presets() -> list[tuple[str, str]]:
    return [(n, str(preset_dict(n).get("description", ""))) for n in preset_names()]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value``; the value is read as a TOML value (numbers, booleans, lists), else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise FlatprivError(f"--set expects key=value (e.g. optim.lr=0.1), got '{text}'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def _set(tree: dict[str, Any], path: list[str], value: Any, raw_key: str) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FlatprivError(f"unknown config key '{raw_key}'")
    node[path[-1]] = value


def resolve(preset: str | None = None, config_file: str | None = None,
            overrides: typing.Sequence[str] = ()) -> tuple[Config, str]:
    """Preset or file, then ``--set`` overrides, validated. Returns the config and a short name for the run."""
    if preset and config_file:
        raise FlatprivError("give either --preset or --config, not both")
    if config_file:
        data, name = _read_toml(Path(config_file)), Path(config_file).stem
    else:
        name = preset or DEFAULT_PRESET
        data = preset_dict(name)
    hints = {f.name: f.type for f in dataclasses.fields(Config)}
    for text in overrides:
        path, value = parse_override(text)
        section = path[0]
        # A string field gets the raw text, so `--set data.root=123` means the directory "123".
        if len(path) == 2 and section in hints and isinstance(value, (int, float, bool)):
            cls = typing.get_type_hints(Config).get(section)
            if dataclasses.is_dataclass(cls) and typing.get_type_hints(cls).get(path[1]) is str:
                value = text.partition("=")[2].strip()
        _set(data, path, value, ".".join(path))
    return config_from_dict(data), name
