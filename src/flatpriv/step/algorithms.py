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
from .optim import lr_values
from .oracles import LossFn, mean_grad
from .pipelines import Pipeline, ascent, plain, sharpreg
from .variants import gsam, looksam

# non-private rows: (cfg, model, loss, the run's step count T, 0 when unknown) -> Pipeline
Builder = Callable[[Config, torch.nn.Module, LossFn, int], Pipeline]
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
    averages: bool = False  # SWA: the run evaluates and saves its running weight average (step/averaging.py)

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
        self,
        cfg: Config,
        model: torch.nn.Module,
        priv: PrivateRun | None = None,
        loss_fn: LossFn = F.cross_entropy,
        total_steps: int = 0,
    ) -> Pipeline:
        """This row's gradient pipeline for a single run; ``loss_fn(logits, y)`` is the minibatch loss L_B of the
        non-private rows (the clipped oracle's per-example loss is cross-entropy); ``total_steps``: the run's T,
        which GSAM's ρ schedule needs."""
        if self.kind == "plain":
            assert self.build is not None
            return self.build(cfg, model, loss_fn, total_steps)
        if priv is None:
            raise FlatprivError(f"algorithm = '{self.name}' needs its privacy set-up (flatpriv.privacy.setup_privacy)")
        if self.kind == "noisy":
            return noisy_gradient(
                mean_grad(model, loss_fn), cfg.privacy.noise_multiplier, cfg.train.batch_size, priv.generator
            )
        oracle = clipped_grad(model, cfg.privacy.clip_norm, cfg.privacy.clip_method, cfg.augment.multiplicity)
        core = self.dp_core(cfg, micro_batched(oracle, cfg.privacy.physical_batch_size))
        return single_run(core, priv.privatizer, oracle.sensitivity)


def _dp_none(cfg: Config) -> None:
    return None


def _rho_at(cfg: Config, total_steps: int) -> Callable[[int], float]:
    """GSAM's ρ at step t: ρ, or with ``rho_schedule = "lr"`` ρ_min + (ρ − ρ_min)·η_t/η_0, η_t the run's own lr."""
    sh = cfg.sharpness
    if sh.rho_schedule == "constant":
        return lambda t: sh.rho
    if total_steps < 1:
        raise FlatprivError("sharpness.rho_schedule = 'lr' needs the run's step count (Algorithm.pipeline total_steps)")
    ratio = [lr / cfg.optim.lr for lr in lr_values(cfg, total_steps)]
    return lambda t: sh.rho_min + (sh.rho - sh.rho_min) * ratio[min(t, total_steps - 1)]


def _swa_base(cfg: Config) -> Algorithm:
    base = get_algorithm(cfg.swa.base)
    if base.kind != "plain" or base.averages:
        raise FlatprivError(f"swa.base = '{cfg.swa.base}': SWA runs on a non-private row (sgd, sam, gsam, ...)")
    return base


def _swa_build(c: Config, m: torch.nn.Module, L: LossFn, n: int) -> Pipeline:
    base = _swa_base(c)
    assert base.build is not None
    return base.build(c, m, L, n)


def _previous(direction: sharpness.Ascent) -> sharpness.Ascent:
    return sharpness.Ascent(direction.direction, source="previous")


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm("sgd", "w ← opt(w, ∇L_B(w))", build=lambda c, m, L, n: plain(mean_grad(m, L))),
        Algorithm(
            "sam",
            "ε = ρ g/‖g‖; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L, n: ascent(mean_grad(m, L), sharpness.sam(c.sharpness.rho)),
        ),
        Algorithm(
            "vasso",
            "d = (1−θ)d + θg; ε = ρ d/‖d‖; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L, n: ascent(mean_grad(m, L), sharpness.vasso(c.sharpness.rho, c.sharpness.theta)),
        ),
        Algorithm(
            "asam",
            "ε = ρ T²g/‖Tg‖, T = |w|+η; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L, n: ascent(mean_grad(m, L), sharpness.asam(c.sharpness.rho, c.sharpness.asam_eta)),
        ),
        Algorithm(
            "sharpreg",
            "ε = ρ g/‖g‖; w ← opt(w, (1+λ)∇L_B(w) − λ∇L_B(w+ε))",
            build=lambda c, m, L, n: sharpreg(mean_grad(m, L), c.sharpness.rho, c.sharpness.sharpreg_lambda),
        ),
        Algorithm(
            "gsam",
            "ε = ρ_t g/‖g‖; g_p = ∇L_B(w+ε); g_⊥ = g − (g·g_p/‖g_p‖²)g_p; w ← opt(w, g_p − α g_⊥)",
            build=lambda c, m, L, n: gsam(mean_grad(m, L), _rho_at(c, n), c.sharpness.gsam_alpha),
        ),
        Algorithm(
            "looksam",
            "t%k=0: g_s = ∇L_B(w+ρg/‖g‖), g_v = g_s − (g_s·g/‖g‖²)g, w ← opt(w, g_s); "
            "else w ← opt(w, g + α(‖g‖/‖g_v‖)g_v)",
            build=lambda c, m, L, n: looksam(
                mean_grad(m, L),
                c.sharpness.rho,
                c.sharpness.looksam_k,
                c.sharpness.looksam_alpha,
                c.sharpness.looksam_layerwise,
            ),
        ),
        Algorithm(
            "friendlysam",
            "d = g − σm; m = λm + (1−λ)g (m₁ = d₁ = g₁); ε = ρ d/‖d‖; w ← opt(w, ∇L_B(w+ε))",
            build=lambda c, m, L, n: ascent(
                mean_grad(m, L), sharpness.friendly(c.sharpness.rho, c.sharpness.fsam_sigma, c.sharpness.fsam_lambda)
            ),
        ),
        Algorithm(
            "swa",
            "w ← the step of row swa.base; after each epoch e ≥ ⌊start·E⌋: w̄ ← w̄ + (w − w̄)/(n+1); run evaluates w̄",
            build=_swa_build,
            averages=True,
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
