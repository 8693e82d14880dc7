"""Memorization and influence from a pool of models: arrays in, arrays out.

What lives here: the Feldman & Zhang 2020 subsampled estimators (:mod:`.feldman`), paper 1's influence entropy, a
**[reconstruction]** (:mod:`.entropy`), and input-loss curvature (:mod:`.curvature`, Garg et al. 2024; paper 2).
Inputs are the arrays a pool saves: ``keep`` bool [K, N], logits [K, N, C], labels [N].

Imports: ``flatpriv.errors`` only. ``feldman`` and ``entropy`` need numpy/scipy and never torch; ``curvature``
needs torch (it differentiates a model with respect to its input) and is deliberately not imported here, so
``import flatpriv.memorization`` needs only numpy and scipy. Nothing here imports the training stack.
"""

from .entropy import Histogram, bucket_comparison, entropy_buckets, influence_entropy, memorization_histogram
from .feldman import MemResult, check_pool, correctness, influence, memorization

__all__ = [
    "Histogram",
    "MemResult",
    "bucket_comparison",
    "check_pool",
    "correctness",
    "entropy_buckets",
    "influence",
    "influence_entropy",
    "memorization",
    "memorization_histogram",
]
