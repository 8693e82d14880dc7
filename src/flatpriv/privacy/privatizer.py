"""The Gaussian mechanism of DP-SGD as a pure function, and the run state that feeds it.

    g̃ = ( Σ_{i∈B} clip_C(∇ℓ_i(w')) + σC·z ) / (q·N),   z ~ N(0, I)          (Abadi et al. 2016; science.md §2.1)

divided by the EXPECTED batch size q·N, never |B|. :func:`privatize` takes the standard-normal draw z as an
argument, so it runs unchanged under ``torch.func.vmap`` with per-model σ, q and noise (a pool); the draws come
from each run's own generator outside any vmap (:meth:`Privatizer.noise`), and the ledger is written outside too
(:meth:`Privatizer.record`), once per release that happened. ε is computed from the ledger, so DP-SAM's two
releases per step are charged because they happen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import torch

from ..config import MAX_STEPS, Config
from ..errors import FlatprivError
from ..tree import Tree
from .accounting import (
    NEIGHBOURING,
    Ledger,
    accountant_description,
    calibrate_noise,
    check_accountable,
    epsilon_from_ledger,
)
from .sampling import Source, make_generator, poisson_indices, standard_normal

Kind = Literal["plain", "noisy", "dp"]
NOISY_NOTE = (
    "noisy_sgd does not clip, so its sensitivity is unbounded: it is not differentially private and has no epsilon"
)


class Noise(NamedTuple):
    """What one DP step takes from outside: one standard-normal tree per release, σC and q·N.

    In a single run ``std`` and ``divisor`` are floats; in a pool they are [K] tensors and every leaf of ``z`` has
    a leading model axis, so ``vmap`` maps over all of it.
    """

    z: tuple[Tree, ...]
    std: float | torch.Tensor  # σ·C
    divisor: float | torch.Tensor  # q·N, the expected batch size


def privatize(clipped_sum: Tree, z: Tree, std: float | torch.Tensor, divisor: float | torch.Tensor) -> Tree:
    """g̃ = (Σ clip_C(∇ℓ_i) + σC·z) / (q·N): pure, so the same function serves single runs and vmapped pools.

    >>> g = privatize({"w": torch.tensor([2.0])}, {"w": torch.tensor([1.0])}, std=0.5, divisor=4.0)
    >>> g["w"].item()  # (2 + 0.5·1) / 4
    0.625
    """
    if isinstance(std, torch.Tensor) or isinstance(divisor, torch.Tensor):  # pools: per-model scalars under vmap
        return {k: (v + z[k] * std) * (1.0 / divisor) for k, v in clipped_sum.items()}
    # a single run: two passes over the leaves (add with alpha, then scale), one dispatch for all leaves each
    keys = list(clipped_sum)
    out = torch._foreach_add([clipped_sum[k] for k in keys], [z[k] for k in keys], alpha=float(std))
    torch._foreach_mul_(out, 1.0 / float(divisor))
    return dict(zip(keys, out))


@dataclass
class Privatizer:
    """A single run's mechanism state: σ, q, q·N, the noise generator and the ledger of releases."""

    noise_multiplier: float  # σ
    sample_rate: float  # q
    expected_batch_size: float  # q·N
    generator: Source
    ledger: Ledger

    def noise(self, like: Tree, releases: int, sensitivity: float) -> Noise:
        """``releases`` standard-normal draws shaped like ``like``, in the order the releases use them."""
        z = tuple(standard_normal(like, self.generator) for _ in range(releases))
        return Noise(z, self.noise_multiplier * sensitivity, self.expected_batch_size)

    def record(self, releases: int) -> None:
        self.ledger.record(self.noise_multiplier, self.sample_rate, releases)

    def release(self, clipped_sum: Tree, sensitivity: float) -> Tree:
        """One release outside any pipeline: draw, privatize, record."""
        noise = self.noise(clipped_sum, 1, sensitivity)
        self.record(1)
        return privatize(clipped_sum, noise.z[0], noise.std, noise.divisor)


def privacy_summary(
    kind: Kind,
    noise_multiplier: float | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    accountant: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The privacy keys of a summary.json, for single runs and pools alike: no ε unless the row is DP, and then
    always with δ, the accountant and the neighbouring relation that produced it."""
    empty = {"epsilon": None, "delta": None, "accountant": None, "neighbouring": None}
    if kind == "plain":
        return empty
    if kind == "noisy":
        return {**empty, "noise_multiplier": noise_multiplier, "epsilon_note": NOISY_NOTE, **extra}
    assert accountant is not None and epsilon is not None
    return {
        "epsilon": epsilon,
        "delta": delta,
        "accountant": accountant_description(accountant),
        "neighbouring": NEIGHBOURING,
        "noise_multiplier": noise_multiplier,
        **extra,
    }


class Mechanism(Protocol):
    """What :func:`setup_privacy` reads of an algorithm row (``flatpriv.step.Algorithm`` satisfies it)."""

    name: str
    kind: Kind
    releases: int


@dataclass
class PrivateRun:
    """Everything a DP (or Noisy-SGD) run needs besides the model: rates, σ, generators and the ledger."""

    sample_rate: float  # q
    noise_multiplier: float  # σ
    steps_per_epoch: int
    privatizer: Privatizer
    sampler: Source  # Poisson sampling (secret, like the noise)
    accountant: str
    delta: float
    kind: Kind = "dp"  # "noisy": Noisy-SGD releases noise but has no ε

    @property
    def accounted(self) -> bool:
        return self.kind == "dp"

    @property
    def generator(self) -> Source:
        return self.privatizer.generator

    def poisson_batch(self, n: int) -> torch.Tensor:
        """Positions of one Poisson sample of the n examples (each in with probability q), from the secret sampler."""
        return poisson_indices(n, self.sample_rate, self.sampler)

    def epsilon(self) -> float | None:
        if not self.accounted:
            return None
        return epsilon_from_ledger(self.privatizer.ledger, self.delta, self.accountant)

    def summary(self, epsilon: float | None, clip_norm: float, noise_source: str) -> dict[str, Any]:
        """The privacy keys of this run's summary.json, ``epsilon`` being the last epoch's."""
        if not self.accounted:
            return privacy_summary("noisy", self.noise_multiplier, noise_source=noise_source)
        return privacy_summary(
            "dp",
            self.noise_multiplier,
            epsilon,
            self.delta,
            self.accountant,
            noise_source=noise_source,
            sample_rate=self.sample_rate,
            clip_norm=clip_norm,
            releases=self.privatizer.ledger.releases,
            expected_batch_size=self.privatizer.expected_batch_size,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.privatizer.ledger.to_dict(),
            "noise": self.generator.get_state(),
            "sampler": self.sampler.get_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.privatizer.ledger = Ledger.from_dict(d["ledger"])
        self.generator.set_state(d["noise"].cpu())  # a generator's state is a CPU byte tensor on any device
        self.sampler.set_state(d["sampler"].cpu())


def setup_privacy(cfg: Config, algorithm: Mechanism, n: int, device: torch.device) -> PrivateRun | None:
    """Validate the privacy settings for this algorithm row and build its run state; refuse what would break DP.

    ``None`` for a non-private row. ``n`` is the size of the data set the run samples from (q = B/n).
    """
    p = cfg.privacy
    private, noisy = algorithm.kind == "dp", algorithm.kind == "noisy"
    if algorithm.kind == "plain":
        if p.target_epsilon > 0 or p.noise_multiplier > 0 or p.secure_rng:
            raise FlatprivError(
                f"algorithm = '{algorithm.name}' is not private: privacy.target_epsilon / "
                "noise_multiplier / secure_rng need dpsgd, dpsam, dpsat, dpvasso_sat (or noisy_sgd)"
            )
        return None
    if p.secure_rng and p.noise_seed >= 0:
        raise FlatprivError(
            "privacy.secure_rng draws from os.urandom, which cannot be seeded: leave privacy.noise_seed at -1"
        )
    if noisy and p.target_epsilon > 0:
        raise FlatprivError(
            "noisy_sgd has no clipping and so no ε: set privacy.noise_multiplier, not "
            "privacy.target_epsilon (use dpsgd for a privacy guarantee)"
        )
    if private and p.target_epsilon > 0 and p.noise_multiplier > 0:
        raise FlatprivError("give privacy.target_epsilon or privacy.noise_multiplier, not both")
    if private and p.target_epsilon == 0 and p.noise_multiplier == 0:
        raise FlatprivError(
            f"{algorithm.name} needs noise: set privacy.target_epsilon (σ is calibrated) or "
            "privacy.noise_multiplier > 0"
        )
    q = p.sample_rate if p.sample_rate > 0 else cfg.train.batch_size / n
    if not 0 < q <= 1:
        raise FlatprivError(
            f"sample rate q = {q:.4g} is outside (0, 1]: lower train.batch_size or set privacy.sample_rate"
        )
    steps_per_epoch = max(1, round(1 / q)) if private else -(-n // cfg.train.batch_size)
    if private and q * n < 1:
        raise FlatprivError(
            f"sample rate q = {q:.3g} gives an expected batch of {q * n:.3g} examples and {steps_per_epoch} steps "
            "per epoch: raise privacy.sample_rate or train.batch_size"
        )
    if private and steps_per_epoch * cfg.train.epochs > MAX_STEPS:
        raise FlatprivError(
            f"{steps_per_epoch} steps per epoch x train.epochs = {cfg.train.epochs} is more than {MAX_STEPS:.0e} "
            "steps, which the accountant cannot compose: raise privacy.sample_rate or lower train.epochs"
        )
    if private and p.delta >= 1.0 / n and not p.allow_large_delta:
        raise FlatprivError(
            f"privacy.delta = {p.delta:g} ≥ 1/N = {1 / n:.3g}: such a δ allows publishing an example outright "
            "(δ = 0.999 reports ε = 0); lower it, or set privacy.allow_large_delta = true to accept it"
        )
    sigma = p.noise_multiplier
    if private and p.target_epsilon > 0:
        sigma = calibrate_noise(
            p.target_epsilon,
            q,
            steps_per_epoch * cfg.train.epochs,
            p.delta,
            p.accountant,
            releases_per_step=algorithm.releases,
        )
    if private:
        check_accountable(sigma, p.accountant)  # before any directory exists, not at the first epoch's ε
    if p.noise_seed >= 0:
        warnings.warn(
            "privacy.noise_seed is fixed: seeded noise and sampling are for reproducible research "
            "only, not for a deployed privacy guarantee",
            stacklevel=2,
        )
    noise = make_generator(p.noise_seed, device, p.secure_rng)
    sampler = make_generator(p.noise_seed + 1 if p.noise_seed >= 0 else -1, device, p.secure_rng)
    priv = Privatizer(sigma, q, q * n, noise, Ledger([]))
    return PrivateRun(q, sigma, steps_per_epoch, priv, sampler, p.accountant, p.delta, kind=algorithm.kind)
