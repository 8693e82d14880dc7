"""Membership-inference attacks on arrays of per-model statistics (numpy/scipy/scikit-learn only, never torch).

A pool of K models saves ``keep`` [K, N] (model k trained on example i) and ``logits`` [K, N, C] on the N
candidates with ``labels`` [N]; :mod:`.scores` turns logits into per-model statistics and threshold-attack scores,
:mod:`.lira` runs LiRA (Carlini et al. 2022) leave-one-out over the pool as the paper describes it and
:mod:`.lira_variants` as its reference code scores it, :mod:`.rmia` runs RMIA (Zarifzadeh et al. 2024) against a
population of never-trained points, and :mod:`.metrics` gives ROC, AUC, balanced accuracy and TPR at low FPR with
bootstrap CIs. The audits are :mod:`flatpriv.privacy.one_run` (Steinke et al. 2023) and the Clopper–Pearson
heuristic :func:`flatpriv.privacy.audit.epsilon_lower_bound`. Import RMIA and the reference-code LiRA variants
from their modules (``from flatpriv.attacks.rmia import RMIA``).

Imports: ``flatpriv.errors`` only; numpy, scipy and scikit-learn's metrics (matplotlib for a ROC plot). Nothing of
the training stack, so each attack can be read and tested on arrays alone.
"""

from .lira import (
    GaussianParams,
    LiRA,
    leave_one_out,
    leave_one_out_params,
    lira_params,
    lira_scores,
    scores_from_params,
)
from .metrics import RocCurve, attack_metrics, auc, balanced_accuracy, clean_scores, plot_roc, roc, tpr_at_fpr
from .scores import (
    THRESHOLD_KINDS,
    confidence,
    logit_scaled_confidence,
    loss,
    modified_entropy,
    per_class_calibrate,
    per_class_standardize,
    softmax,
    threshold_scores,
    true_class_prob,
)

__all__ = [
    "THRESHOLD_KINDS",
    "GaussianParams",
    "LiRA",
    "RocCurve",
    "attack_metrics",
    "auc",
    "balanced_accuracy",
    "clean_scores",
    "confidence",
    "leave_one_out",
    "leave_one_out_params",
    "lira_params",
    "lira_scores",
    "logit_scaled_confidence",
    "loss",
    "modified_entropy",
    "per_class_calibrate",
    "per_class_standardize",
    "plot_roc",
    "roc",
    "scores_from_params",
    "softmax",
    "threshold_scores",
    "tpr_at_fpr",
    "true_class_prob",
]
