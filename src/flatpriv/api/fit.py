"""``flatpriv.fit``: train any ``nn.Module`` on your own data into a run directory, as ``flatpriv train`` does.

The settings are keyword arguments (:mod:`flatpriv.api.keywords`) checked by the Config's own rules; the model
and data take the place of the config's ``model`` and ``data`` sections (both recorded as ``"user"`` in
config.json, with the model's class, parameter shapes and the data's shapes and SHA-256 in provenance.json).
Everything else is :func:`flatpriv.train.train`'s: the same step, ledger, ε, checkpoints, files and summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import results
from ..checkpoint import changed_keys
from ..config import Config, config_to_dict
from ..errors import FlatprivError
from ..privacy.validate import fix_model
from ..progress import Progress, check_log_every
from ..step import get_algorithm
from ..train import Setup, prepare, train
from ..train import resume as resume_run
from .data import Data, _first_line, describe, user_dataset
from .keywords import config_from_keywords

ModelOrFactory = nn.Module | Callable[[], nn.Module]


def fit(
    model: ModelOrFactory,
    train_data: Data,
    test_data: Data | None = None,
    *,
    algorithm: str = "dpsat",
    out: str | Path = "runs",
    name: str = "fit",
    quiet: bool = True,
    log_every: int | None = None,
    resume: str | Path | None = None,
    fix_batchnorm: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``train_data`` with ``algorithm``; returns summary.json's contents (its ``run_dir`` under
    ``out``, named ``train-<name>-<time>-<id>``), exactly as ``flatpriv train`` does.

    ``model``: an ``nn.Module`` (trained in place: afterwards it holds the trained weights) or a function of no
    arguments returning one, which fit calls right after ``torch.manual_seed(seed)``, where ``flatpriv train``
    builds its own model, so ``fit(lambda: build_model(...), ...)`` starts from the config path's weights.
    ``train_data``, ``test_data``: (x, y) tensors or arrays, a TensorDataset, or a map-style Dataset of (x, y)
    items, read once into tensors; y holds class indices and the model must return logits [B, classes]. Without
    ``test_data`` the test metrics are None.
    ``settings``: any keyword of :data:`flatpriv.api.keywords.KEYWORDS` (``epochs``, ``batch_size``, ``lr``,
    ``target_epsilon`` or ``noise_multiplier``, ``delta``, ``clip_norm``, ``rho``, ``seed``, ``device``, ...);
    unset ones keep the Config defaults, and ``device`` defaults to the module's own device.
    ``quiet``: no progress bar (the default); with ``quiet=False`` an epoch bar with its ETA shows on a terminal
    (stderr) or in Jupyter. ``log_every``: every N epochs, and after the last, one line on stdout:
    ``epoch 3/10: train loss 0.4123, train accuracy 0.8812, test loss 0.4506, test accuracy 0.8650, epsilon
    1.2345, 12.3 s`` (the test pair with test data, ε under DP, seconds since the run started); 0 or None (the
    default): no lines. It prints whether ``quiet`` or not; anything but a whole number >= 0 is refused.
    ``fix_batchnorm``: replace the module's BatchNorm layers by GroupNorm in place (:func:`flatpriv.privacy.fix_model`)
    before training; without it a DP run refuses BatchNorm. ``resume``: a run directory this call's run was
    interrupted in; give the same model, data and settings again and it continues from its last epoch.
    """
    log_every = check_log_every(log_every, "flatpriv.fit: log_every")
    if isinstance(model, nn.Module) and "device" not in settings:
        first = next(iter(model.parameters()), None)
        settings = {**settings, "device": str(first.device) if first is not None else "cpu"}
    cfg = config_from_keywords("flatpriv.fit", algorithm, settings)
    get_algorithm(cfg.algorithm)
    build = _builder(model, fix_batchnorm)
    data = user_dataset(train_data, test_data)
    if resume is not None:
        return _resume(Path(resume), cfg, build, data, Progress(quiet, log_every))
    s = prepare(cfg, model=build, data=data)
    _probe(s)
    s.supplied = describe(s.model, s.data)
    return train(cfg, name=name, out=out, quiet=quiet, setup=s, log_every=log_every)


def _builder(model: ModelOrFactory, fix_batchnorm: bool) -> Callable[[], nn.Module]:
    """A function returning the module to train: the given one, or the factory's result, checked (and fixed)."""
    if not isinstance(model, nn.Module) and not callable(model):
        raise FlatprivError(f"model must be a torch.nn.Module or a function returning one, got {type(model).__name__}")

    def build() -> nn.Module:
        m = model if isinstance(model, nn.Module) else model()
        if not isinstance(m, nn.Module):
            raise FlatprivError(f"the model function returned {type(m).__name__}, not a torch.nn.Module")
        return fix_model(m, inplace=True) if fix_batchnorm else m

    return build


def _probe(s: Setup) -> None:
    """One forward pass on two training examples, before any directory exists: a model that does not fit the data
    is one line now rather than a traceback in the first epoch. Evaluation mode, no gradient, RNG state kept."""
    model, x = s.model, s.data.x_train[:2]
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = model.training
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            out = model(x)
        except Exception as e:  # the user's forward: any error, as one line
            raise FlatprivError(f"model(x_train[:2]) failed: {_first_line(e)}") from e
        finally:
            model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FlatprivError(f"the model must return logits of shape [batch, classes]; on x_train[:2] it returned {got}")
    if out.shape[1] < s.data.num_classes:
        raise FlatprivError(
            f"the model returns {out.shape[1]} logits per example but the labels go up to {s.data.num_classes - 1}"
        )


def _resume(run_dir: Path, cfg: Config, build: Callable[[], nn.Module], data: Any, shown: Progress) -> dict[str, Any]:
    """Continue a fit run: the settings must be the run's own, and the model and data must match what it recorded."""
    if not results.is_run_dir(run_dir):
        raise FlatprivError(f"resume={run_dir}: not a run directory (no config.json)")
    stored = results.read_json(run_dir / "config.json")
    keys = changed_keys(stored, config_to_dict(cfg)) if isinstance(stored, dict) else ["config.json"]
    if keys:
        raise FlatprivError(
            f"resume={run_dir}: the run started with other settings ({', '.join(keys[:6])}); "
            "call fit with the settings it started with"
        )
    model = build()
    supplied = describe(model, data)
    return resume_run(run_dir, shown.quiet, model=model, data=data, supplied=supplied, log_every=shown.log_every)
