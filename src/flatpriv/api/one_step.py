"""``flatpriv.Step``: one step of any flatpriv algorithm inside your own training loop.

In the spirit of Opacus's ``make_private`` (wrap a model and its optimizer once, then train as usual) and of
davda54's ``SAM`` (the ascent lives inside the step), but with nothing perturbed in place: the gradient at w + ε
is the model evaluated at another parameter tree (``torch.func.functional_call``), so ``model``'s weights only
ever change by the optimizer's own ``step()``. The step is the row's own pipeline, the one ``flatpriv train``
runs (:meth:`flatpriv.step.Algorithm.pipeline`): the same clipping, noise, ledger and refusals.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import FlatprivError
from ..privacy.accounting import Ledger, epsilon_from_ledger
from ..privacy.clipping import FlatprivWarning
from ..privacy.privatizer import NOISY_NOTE, setup_privacy
from ..privacy.validate import validate_model
from ..step import get_algorithm, take_step
from .keywords import KEYWORDS, config_from_keywords

# Step drives the caller's optimizer, so only the gradient side's keywords apply (no lr, schedule, device, ...).
STEP_KEYWORDS = {k for k, key in KEYWORDS.items() if key.startswith(("privacy.", "sharpness."))} | {
    "epochs",
    "batch_size",
}


class Step:
    """``step = Step(model, optimizer, algorithm="dpsat", ...)``; then ``loss = step(x, y)`` per batch.

    Each call computes the row's gradient on (x, y) at the model's current weights (DP rows: Σ clip_C(∇ℓ_i) +
    N(0, σ²C²I), divided by q·N; DP-SAM releases twice, at w and at w + ε), sets ``p.grad`` of every parameter and
    calls ``optimizer.step()``. The loss is cross-entropy on logits [B, classes] and integer labels.

    Keywords (as :func:`flatpriv.fit`'s, the gradient side only, :data:`STEP_KEYWORDS`): ``rho``, ``theta``, ...;
    for DP rows ``clip_norm``, ``delta``, and either ``noise_multiplier`` or ``target_epsilon`` with ``epochs``
    (σ is calibrated for epochs × round(1/q) steps), ``sample_rate`` q or ``batch_size`` (q = batch_size / N),
    and ``dataset_size`` N, the number of examples the batches are drawn from. DP rows refuse a model
    :func:`flatpriv.privacy.validate_model` refuses, and every setting that would break DP (no noise, δ ≥ 1/N, ...).

    Under DP the accountant assumes Poisson sampling: draw each batch with :meth:`sample` (the step's own secret
    sampler); a batch not drawn there gets one ``FlatprivWarning``. :meth:`epsilon` is the accountant's ε over
    every release recorded so far, never a planned one.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        algorithm: str = "dpsat",
        *,
        dataset_size: int | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise FlatprivError(f"flatpriv.Step: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise FlatprivError(
                f"flatpriv.Step: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        cfg = config_from_keywords("flatpriv.Step", algorithm, settings, STEP_KEYWORDS)
        row = get_algorithm(cfg.algorithm)
        if row.averages:
            raise FlatprivError(
                "flatpriv.Step: swa averages weights per epoch; use flatpriv.fit or torch.optim.swa_utils"
            )
        if cfg.sharpness.rho_schedule != "constant":
            raise FlatprivError("flatpriv.Step: rho_schedule = 'lr' follows flatpriv's own schedule; use flatpriv.fit")
        self.model, self.optimizer, self.algorithm, self.config = model, optimizer, row, cfg
        self.private = None
        if row.kind != "plain":
            n = _dataset_size(dataset_size, row.name)
            if row.private:
                _check_dp_settings(settings)
                validate_model(model)
            device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
            self.private = setup_privacy(cfg, row, n, device)
        self.dataset_size = dataset_size
        self.planned_steps = self.private.steps_per_epoch * cfg.train.epochs if self.private else 0
        self.pipeline = row.pipeline(cfg, model, self.private, total_steps=self.planned_steps)
        self.params = dict(model.named_parameters())
        self.state = self.pipeline.init(self.params)
        self.steps = 0
        self._sampled: torch.Tensor | None = None  # the x of the last Poisson batch drawn by sample()
        self._warned: set[str] = set()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on the batch (x, y); returns its mean loss (detached, at the weights before the step)."""
        if self.dp and x is not self._sampled:
            self._warn(
                "sampling",
                "this batch was not drawn by Step.sample: the ε reported assumes every batch is a Poisson sample "
                f"(rate q = {self.sample_rate:.4g}) of the dataset_size = {self.dataset_size} examples",
            )
        self._sampled = None
        self.state, loss = take_step(self.pipeline, self.params, self.state, self.optimizer, x, y)
        self.steps += 1
        if self.dp and self.config.privacy.target_epsilon > 0 and self.steps > self.planned_steps:
            self._warn(
                "budget",
                f"step {self.steps} is past the {self.planned_steps} steps σ was calibrated for: ε now exceeds "
                f"target_epsilon = {self.config.privacy.target_epsilon:g} (Step.epsilon() says by how much)",
            )
        return loss

    step = __call__

    def sample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A Poisson batch of the whole training set (x, y): each of the N examples in with probability q, drawn
        from the step's secret sampler (sizes vary; an empty batch is possible and still releases noise)."""
        if not self.dp:
            raise FlatprivError(f"Step.sample draws Poisson batches for DP rows; {self.algorithm.name} takes any batch")
        if len(x) != self.dataset_size or len(y) != self.dataset_size:
            raise FlatprivError(
                f"Step.sample: x and y must hold all dataset_size = {self.dataset_size} examples; "
                f"got {len(x)}, {len(y)}"
            )
        assert self.private is not None
        idx = self.private.poisson_batch(len(x)).to(x.device)
        xb, yb = x[idx], y[idx.to(y.device)]
        self._sampled = xb
        return xb, yb

    def epsilon(self, delta: float | None = None) -> float:
        """ε at ``delta`` (default: the configured δ) of every release made so far, from the accountant."""
        if not self.dp:
            note = NOISY_NOTE if self.algorithm.noisy else f"{self.algorithm.name} is not private: it has no ε"
            raise FlatprivError(note)
        p = self.config.privacy
        return epsilon_from_ledger(self.ledger, p.delta if delta is None else delta, p.accountant)

    @property
    def dp(self) -> bool:
        return self.algorithm.private

    @property
    def ledger(self) -> Ledger:
        """Every release so far (σ, q, count); DP-SAM records two per step."""
        if self.private is None:
            raise FlatprivError(f"{self.algorithm.name} releases nothing: it has no ledger")
        return self.private.privatizer.ledger

    @property
    def releases(self) -> int:
        return self.ledger.releases if self.dp else 0

    @property
    def noise_multiplier(self) -> float | None:
        return self.private.noise_multiplier if self.private else None

    @property
    def sample_rate(self) -> float | None:
        return self.private.sample_rate if self.private else None

    @property
    def steps_per_epoch(self) -> int | None:
        """round(1/q) for DP rows (what σ's calibration assumed per epoch); None otherwise."""
        return self.private.steps_per_epoch if self.private else None

    def state_dict(self) -> dict[str, Any]:
        """Steps, the pipeline's state (DP-SAT's last release, VaSSO's d, ...) and the ledger and generators."""
        return {
            "steps": self.steps,
            "state": self.state,
            "private": self.private.state_dict() if self.private else None,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.steps, self.state = int(d["steps"]), d["state"]
        if self.private is not None:
            self.private.load_state_dict(d["private"])

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, FlatprivWarning, stacklevel=3)


def _dataset_size(n: Any, name: str) -> int:
    if n is None:
        raise FlatprivError(
            f"flatpriv.Step: {name} needs dataset_size=N, the number of examples its batches are drawn from "
            "(q = batch_size / N, and the noisy sum is divided by q·N)"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FlatprivError(f"flatpriv.Step: dataset_size must be a positive integer, got {n!r}")
    return n


def _check_dp_settings(settings: dict[str, Any]) -> None:
    """What a DP Step must be told rather than default: the sampling rate, and the epochs a target ε is for."""
    if "sample_rate" not in settings and "batch_size" not in settings:
        raise FlatprivError("flatpriv.Step: give sample_rate=q or batch_size=B (expected batch, q = B/N)")
    if settings.get("target_epsilon") and "epochs" not in settings:
        raise FlatprivError("flatpriv.Step: target_epsilon needs epochs=E, the number of passes σ is calibrated for")
