"""The torch-native entry points: :func:`fit` (any ``nn.Module`` and your own data into a run directory, as
``flatpriv train``) and :class:`Step` (one step of any algorithm in your own loop, with its ledger and ε).

What lives here: the keyword arguments as one validated Config (:mod:`.keywords`), your data as resident
tensors and what a run records of your model and data (:mod:`.data`), ``fit`` and its resume (:mod:`.fit`),
and ``Step`` (:mod:`.one_step`).

Imports: ``flatpriv.train`` (prepare, train, resume), ``flatpriv.step`` (the algorithm rows), ``flatpriv.privacy``
(model checks, the privacy set-up, the accountant), ``flatpriv.config``, ``flatpriv.data``, ``flatpriv.results``,
``flatpriv.checkpoint``, ``flatpriv.errors``; nothing above train (pools, analyses, studies, cli).
"""

from .fit import fit
from .keywords import KEYWORDS, config_from_keywords, keywords_from_config
from .one_step import Step

__all__ = ["KEYWORDS", "Step", "config_from_keywords", "fit", "keywords_from_config"]
