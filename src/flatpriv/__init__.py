"""flatpriv: flat-minima optimizers (SAM, VaSSO) under differential privacy, and what they do to memorization.

Python API in brief::

    from flatpriv import resolve, train
    cfg, name = resolve(preset="sam", overrides=["train.epochs=5"])
    summary = train(cfg, name=name)          # writes a run directory, returns summary.json as a dict

    import flatpriv                          # your own nn.Module and data, the same run directory
    summary = flatpriv.fit(model, (x, y), algorithm="dpsat", target_epsilon=3.0, epochs=5, lr=0.5, delta=1e-5)
    step = flatpriv.Step(model, optimizer, "dpsat", noise_multiplier=1.0, batch_size=64, dataset_size=len(x))

The names below are imported lazily, so ``flatpriv.privacy``, ``flatpriv.memorization`` and
``flatpriv.attacks`` can be used without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "config",
    "config_from_dict": "config",
    "resolve": "config_io",
    "train": "train",
    "train_pool": "pools.run",
    "fit": "api",
    "Step": "api",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # importing flatpriv.train binds the submodule here; the function wins
        return value
    raise AttributeError(f"module 'flatpriv' has no attribute {name!r}")
