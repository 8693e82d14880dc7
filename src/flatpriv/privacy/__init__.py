"""Differential privacy: the mechanisms next to their accounting, as jax_privacy keeps them.

What lives here:

* mechanisms (torch): :mod:`.clipping` (the clipped-sum oracle Σ clip_C(∇ℓ_i) carrying its sensitivity C),
  :mod:`.ghost` (per-layer ghost norms) and :mod:`.ghost_pool` (the same, vmapped over a pool's model axis),
  :mod:`.sampling` (Poisson sampling, the one noise draw), :mod:`.privatizer` (the pure Gaussian mechanism,
  the run state that feeds it, and :func:`setup_privacy`, which refuses what would break DP), :mod:`.validate`
  (:func:`validate_model`, run before any DP training, and :func:`fix_model`: BatchNorm to GroupNorm);
* accounting and audit (numpy/scipy/dp-accounting, never torch): :mod:`.accounting` (PLD/RDP, the ledger,
  calibration), :mod:`.audit` (the Clopper–Pearson ε lower bound over (model, example) pairs, a heuristic) and
  :mod:`.one_run` (the one-run audit of Steinke, Nasr, Jagielski 2023, valid for one training run).

Imports: ``flatpriv.tree``, ``flatpriv.config``, ``flatpriv.errors`` and the array-only ``flatpriv.attacks``
(the audit); nothing of the training stack. ``import flatpriv.privacy`` loads no torch: the torch-based names
below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .accounting import (
    ACCOUNTANTS,
    NEIGHBOURING,
    Ledger,
    Release,
    accountant_description,
    calibrate_noise,
    epsilon,
    epsilon_from_ledger,
)

_LAZY = {
    "Noise": "privatizer",
    "PrivateRun": "privatizer",
    "Privatizer": "privatizer",
    "privatize": "privatizer",
    "setup_privacy": "privatizer",
    "clipped_grad": "clipping",
    "supports_ghost": "clipping",
    "validate_model": "validate",
    "fix_model": "validate",
    "FlatprivWarning": "clipping",
}

__all__ = [
    "ACCOUNTANTS",
    "NEIGHBOURING",
    "Ledger",
    "Release",
    "accountant_description",
    "calibrate_noise",
    "epsilon",
    "epsilon_from_ledger",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'flatpriv.privacy' has no attribute {name!r}")
