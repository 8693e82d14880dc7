"""Pools: K models of one architecture at once, model k trained on its own subset S_k, equal to K single runs.

What lives here: keep masks (:mod:`.masks`), stacked models, their generators and the vmapped step
(:mod:`.stack`), per-model batch streams and schedules (:mod:`.steps`), plain and Noisy-SGD pools (:mod:`.plain`),
DP pools through the single run's DP step (:mod:`.dp`), the memory estimate that sizes chunks (:mod:`.memory`) and
the chunked local or Ray runs that write a pool's run directory (:mod:`.run`).

Imports: ``flatpriv.train`` (device resolution), ``flatpriv.step``, ``flatpriv.privacy``, ``flatpriv.data``,
``flatpriv.models``, ``flatpriv.results``, ``flatpriv.config``, ``flatpriv.errors``; never ``analyses``,
``studies`` or ``cli``.
"""

from .masks import KEEP_MODES, make_keep
from .plain import train_models
from .run import resume_pool, train_pool

__all__ = ["KEEP_MODES", "make_keep", "resume_pool", "train_models", "train_pool"]
