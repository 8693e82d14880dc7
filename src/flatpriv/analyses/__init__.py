"""Analyses: read a finished run or pool, call the array-only estimators, write a new run directory.

What lives here: ``flatpriv memorization`` (:mod:`.memorization`: Feldman–Zhang scores, influence, influence
entropy buckets), ``flatpriv attack`` (:mod:`.attack`: threshold attacks, LiRA, RMIA, the one-run audit and
the Clopper–Pearson heuristic; :mod:`.attack_scores`, :mod:`.audits`, :mod:`.references`) and
``flatpriv curvature`` (:mod:`.curvature`: input-loss curvature of a pool's models) and ``flatpriv sharpness``
(:mod:`.sharpness`: λ_max and the Hessian trace of a run's training loss, no new directory). Later stages never retrain.

Imports: ``memorization``, ``attacks``, ``privacy``, ``pools``, ``train``, ``data``, ``models``, ``results``,
``plots``, ``config``, ``errors``; never ``studies`` or ``cli``.
"""
