"""Memorization and influence from a pool of models (numpy/scipy only, never torch).

Feldman & Zhang 2020 subsampled estimators (``feldman``) and paper 1's influence entropy, a **[reconstruction]**
(``influence``). Inputs are the arrays a pool saves: ``keep`` bool [K, N], logits [K, N, C], labels [N].

The torch-based input-curvature module (``flatpriv.memorization.curvature``) is deliberately not imported here, so
``import flatpriv.memorization`` itself needs only numpy and scipy.

Note: the package attribute ``influence`` is the FZ influence *function* (``feldman.influence``), not the submodule
of the same name; import the submodule's contents by name (``from flatpriv.memorization.influence import ...``).
"""

from . import feldman
from .feldman import MemResult, check_pool, correctness, memorization
from .influence import Histogram, bucket_comparison, entropy_buckets, influence_entropy, memorization_histogram

# Importing the submodule ``.influence`` set the package attribute ``influence`` to that module; rebind it to the
# function, which is what ``from flatpriv.memorization import influence`` should give.
influence = feldman.influence

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
