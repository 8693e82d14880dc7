"""ε by privacy loss distributions, as ``dp_accounting.pld.PLDAccountant`` computes it, with each (σ, q) release's
PLD built once: building it is two thirds of an ε, and a run asks for ε after every epoch with the same σ and q.

Neighbouring relation add/remove-one; loss grid ``value_discretization_interval`` = :data:`PLD_DISCRETIZATION`
(pessimistic rounding, so ε is an upper bound). A test holds :func:`pld_epsilon` equal to the accountant.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

PLD_DISCRETIZATION = 1e-3


@lru_cache(maxsize=64)
def subsampled_gaussian(noise_multiplier: float, sample_rate: float) -> Any:
    """The PLD of one Poisson-subsampled Gaussian release (σ = ``noise_multiplier``, q = ``sample_rate``), built
    as ``PLDAccountant`` builds it."""
    from dp_accounting import NeighboringRelation
    from dp_accounting.pld import privacy_loss_distribution as pld

    return pld.from_gaussian_mechanism(
        standard_deviation=noise_multiplier,
        value_discretization_interval=PLD_DISCRETIZATION,
        sampling_prob=sample_rate,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
    )


def pld_epsilon(releases: Iterable[tuple[float, float, int]], delta: float) -> float:
    """``PLDAccountant``'s ε at δ of (σ, q, count) releases, step for step: the identity composed with each
    release self-composed ``count`` times, in order."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = pld.identity(value_discretization_interval=PLD_DISCRETIZATION)
    for sigma, q, count in releases:
        dist = dist.compose(subsampled_gaussian(sigma, q).self_compose(count))
    return float(dist.get_epsilon_for_delta(delta))
