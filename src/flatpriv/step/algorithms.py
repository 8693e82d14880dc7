"""Algorithms as rows: each name maps to the pieces its gradient pipeline is built from.

A row is a non-private pipeline builder (``kind="plain"``), Noisy-SGD (``kind="noisy"``: noise, no ε), or a DP row
(``kind="dp"``): a clipped oracle, the Gaussian privatizer and optionally an :class:`~flatpriv.step.ascent.Ascent`
that says where the release is taken (:func:`flatpriv.step.dp.dp_pipeline`). A DP row is fully described by its
ascent, so a new DP algorithm is one row here: single runs and pools both build their step from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import FlatprivError
from ..privacy.clipping import clipped_grad
from ..privacy.privatizer import Kind, PrivateRun
from . import ascent as sharpness
from .dp import ClipFn, DPPipeline, dp_pipeline, micro_batched, noisy_gradient, single_run
from .oracles import LossFn, mean_grad
from .pipelines import Pipeline, ascent, plain, sharpreg

Builder = Callable[[Config, torch.nn.Module, LossFn], Pipeline]  # non-private rows: (cfg, model, loss) -> Pipeline
AscentOf = Callable[[Config], "sharpness.Ascent | None"]  # DP rows: where the release is taken (None: DP-SGD)


@dataclass(frozen=True)
class Algorithm:
    """One row of the registry.

    ``kind``: "plain", "noisy" (Noisy-SGD: noise but no clipping, so no ε) or "dp" (Poisson sampling, clipping,
    noise, ε accounted). ``releases``: privatised gradients per step, what the accountant composes (DP rows; it
    follows from the ascent: 2 when the ascent takes a fresh release, else 1).
    """

    name: str
    rule: str  # the update rule in one line, shown by `flatpriv algorithms` and in docs
    kind: Kind = "plain"
    build: Builder | None = None  # plain rows
    dp_ascent: AscentOf | None = None  # DP rows

    @property
    def private(self) -> bool:
        return self.kind == "dp"

    @property
    def noisy(self) -> bool:
        return self.kind == "noisy"

    @property
    def releases(self) -> int:
        if self.kind != "dp":
            return 0
        return 2 if self._source() == "current" else 1

    def _source(self) -> str | None:
        asc = self.dp_ascent(Config()) if self.dp_ascent else None
        return None if asc is None else asc.source

    def dp_core(self, cfg: Config, clip: ClipFn) -> DPPipeline:
        """This DP row's step on any clipped-sum function (a single run's oracle, or a pool's vmapped one)."""
        if self.kind != "dp" or self.dp_ascent is None:
            raise FlatprivError(f"algorithm = '{self.name}' is not a DP row")
        return dp_pipeline(clip, self.dp_ascent(cfg))

    def pipeline(
        self, cfg: Config, model: torch.nn.Module, priv: PrivateRun | None = None, loss_fn: LossFn = F.cross_entropy
    ) -> Pipeline:
        """This row's gradient pipeline for a single run; ``loss_fn(logits, y)`` is the minibatch loss L_B of the
        non-private rows (the clipped oracle's per-example loss is cross-entropy)."""
        if self.kind == "plain":
            assert self.build is not None
            return self.build(cfg, model, loss_fn)
        if priv is None:
            raise FlatprivError(f"algorithm = '{self.name}' needs its privacy set-up (flatpriv.privacy.setup_privacy)")
        if self.kind == "noisy":
            return noisy_gradient(
                mean_grad(model, loss_fn), cfg.privacy.noise_multiplier, cfg.train.batch_size, priv.generator
            )
        oracle = clipped_grad(model, cfg.privacy.clip_norm, cfg.privacy.clip_method)
        core = self.dp_core(cfg, micro_batched(oracle, cfg.privacy.physical_batch_size))
        return single_run(core, priv.privatizer, oracle.sensitivity)


def _dp_none(cfg: Config) -> None:
    return None


def _previous(direction: sharpness.Ascent) -> sharpness.Ascent:
    return sharpness.Ascent(direction.direction, source="previous")


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm("sgd", "w ← opt(w, ∇L_B(w))", build=lambda c, m, L: plain(mean_grad(m, L))),
        Algorithm(
            "sam",
            "ε = ρ g/‖g‖; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L: ascent(mean_grad(m, L), sharpness.sam(c.sharpness.rho)),
        ),
        Algorithm(
            "vasso",
            "d = (1−θ)d + θg; ε = ρ d/‖d‖; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L: ascent(mean_grad(m, L), sharpness.vasso(c.sharpness.rho, c.sharpness.theta)),
        ),
        Algorithm(
            "asam",
            "ε = ρ T²g/‖Tg‖, T = |w|+η; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L: ascent(mean_grad(m, L), sharpness.asam(c.sharpness.rho, c.sharpness.asam_eta)),
        ),
        Algorithm(
            "sharpreg",
            "ε = ρ g/‖g‖; w ← opt(w, (1+λ)∇L_B(w) − λ∇L_B(w+ε))",
            build=lambda c, m, L: sharpreg(mean_grad(m, L), c.sharpness.rho, c.sharpness.sharpreg_lambda),
        ),
        Algorithm("noisy_sgd", "g = ∇L_B(w) + N(0, (σ/B)²I), no clipping: NOT private, no ε", kind="noisy"),
        Algorithm("dpsgd", "g̃ = (Σ clip_C ∇ℓ_i(w) + N(0,σ²C²I))/(qN); 1 release/step", kind="dp", dp_ascent=_dp_none),
        Algorithm(
            "dpsam",
            "g̃₁ = priv(w); ε = ρ g̃₁/‖g̃₁‖; g̃ = priv(w+ε); 2 releases/step",
            kind="dp",
            dp_ascent=lambda c: sharpness.sam(c.sharpness.rho),
        ),
        Algorithm(
            "dpsat",
            "ε = ρ g̃_{t−1}/‖g̃_{t−1}‖ (ε₀ = 0); g̃ = priv(w+ε); 1 release/step",
            kind="dp",
            dp_ascent=lambda c: _previous(sharpness.sam(c.sharpness.rho)),
        ),
        Algorithm(
            "dpvasso_sat",
            "d = (1−θ)d + θg̃_{t−1}; ε = ρ d/‖d‖; g̃ = priv(w+ε); 1 release/step",
            kind="dp",
            dp_ascent=lambda c: _previous(sharpness.vasso(c.sharpness.rho, c.sharpness.theta)),
        ),
    ]
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise FlatprivError(f"algorithm = '{name}': must be one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
