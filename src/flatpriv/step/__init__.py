"""The pieces of one training step: pure functions of a parameter tree, no files.

What lives here: optax-style gradient transforms (:mod:`.transforms`), the SAM family's ascents (:mod:`.ascent`:
SAM, VaSSO, ASAM as compositions), the non-private gradient oracle (:mod:`.oracles`), the non-private pipelines
and :func:`take_step` (:mod:`.pipelines`), the DP step shared by single runs and pools (:mod:`.dp`), the base
optimizer (:mod:`.optim`), the algorithm table (:mod:`.algorithms`) and the training loss's parameter-space
sharpness, λ_max and the Hessian trace (:mod:`.sharpness`).

Imports: ``flatpriv.privacy`` (clipping, the privatizer), ``flatpriv.tree``, ``flatpriv.config``,
``flatpriv.errors``; nothing that reads or writes files, and nothing above it (train, pools, analyses, cli).
"""

from .algorithms import ALGORITHMS, Algorithm, get_algorithm
from .ascent import Ascent
from .dp import DPPipeline, dp_pipeline
from .optim import make_optimizer
from .pipelines import Pipeline, take_step

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Ascent",
    "DPPipeline",
    "Pipeline",
    "dp_pipeline",
    "get_algorithm",
    "make_optimizer",
    "take_step",
]
