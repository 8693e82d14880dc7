"""Keep masks: which training examples each pool model is trained on.

keep[k, i] = 1[i ∈ S_k]; Feldman–Zhang scores and LiRA both read these masks (science.md §3.1, §4.2).
"""

from __future__ import annotations

import numpy as np

from ..errors import FlatprivError

KEEP_MODES = ("exact", "bernoulli")


def make_keep(n_models: int, n: int, fraction: float, seed: int, mode: str = "exact") -> np.ndarray:
    """keep[k, i] = 1[i ∈ S_k], drawn independently per model.

    ``exact``: every model gets exactly round(fraction · N) examples; fraction 1 trains every model on all N (a
    seed sweep: model k differs only by its seed, and there are no OUT models for memorization or attacks).
    ``bernoulli``: every example joins S_k independently with probability ``fraction``, so |S_k| ~ Binomial(N,
    fraction) (LiRA's setting; the models then take different numbers of steps, see :mod:`flatpriv.pools.steps`).
    """
    if mode not in KEEP_MODES:
        raise FlatprivError(f"--keep-mode {mode}: must be one of {', '.join(KEEP_MODES)}")
    if fraction == 1 and mode == "exact":
        return np.ones((n_models, n), dtype=bool)
    if not 0 < fraction < 1:
        raise FlatprivError(f"--keep {fraction}: the kept fraction must be in (0, 1), or exactly 1 for a seed sweep")
    if mode == "bernoulli":
        keep = np.random.default_rng([seed, 0xBE27]).random((n_models, n)) < fraction
        sizes = keep.sum(1)
        if sizes.min() < 1 or sizes.max() >= n:
            raise FlatprivError(
                f"--keep-mode bernoulli gave a model {sizes.min() if sizes.min() < 1 else n} of "
                f"{n} examples: every model needs some in and some out (move --keep away from 0 and 1)"
            )
        return keep
    m = round(fraction * n)
    if m < 1 or m >= n:
        raise FlatprivError(f"--keep {fraction} keeps {m} of {n} examples: every model needs some in and some out")
    rng = np.random.default_rng([seed, 0x9001])
    keep = np.zeros((n_models, n), dtype=bool)
    for k in range(n_models):
        keep[k, rng.permutation(n)[:m]] = True
    return keep
