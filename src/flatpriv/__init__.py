"""flatpriv: flat-minima optimizers (SAM, VaSSO) under differential privacy, and what they do to memorization.

Python API in brief::

    from flatpriv import resolve, train
    cfg, name = resolve(preset="sam", overrides=["train.epochs=5"])
    summary = train(cfg, name=name)          # writes a run directory, returns summary.json as a dict
"""

__version__ = "0.1.0"

from .config import Config, config_from_dict  # noqa: E402
from .config_io import resolve  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "config_from_dict", "resolve", "train", "__version__"]
