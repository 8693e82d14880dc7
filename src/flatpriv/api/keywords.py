"""The keyword arguments of :func:`flatpriv.fit` and :class:`flatpriv.Step`, turned into one validated Config.

Each keyword is one config key, named by its last part (``lr`` is ``optim.lr``, ``target_epsilon`` is
``privacy.target_epsilon``, ``epochs`` is ``train.epochs``); the five whose last part is ambiguous or too
generic are renamed: ``optimizer`` (optim.name), ``swa_base``, ``swa_start``, ``swa_lr``,
``augment_multiplicity``. The Config is built by :func:`flatpriv.config.config_from_dict`, so a keyword is checked
by exactly the rules a preset, a config file or ``--set`` is; ``data`` and ``model`` are set to ``"user"`` (the
caller supplies them).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..config import USER, Config, config_from_dict
from ..errors import FlatprivError

SECTIONS = ("train", "optim", "sharpness", "swa", "privacy", "augment")
_RENAMED = {
    "optim.name": "optimizer",
    "swa.base": "swa_base",
    "swa.start": "swa_start",
    "swa.lr": "swa_lr",
    "augment.multiplicity": "augment_multiplicity",
}


def _table() -> dict[str, str]:
    table = {"seed": "seed"}
    for section in SECTIONS:
        for f in dataclasses.fields(type(getattr(Config(), section))):
            key = f"{section}.{f.name}"
            short = _RENAMED.get(key, f.name)
            assert short not in table, f"keyword {short!r} would mean two config keys"
            table[short] = key
    return table


KEYWORDS: dict[str, str] = _table()  # keyword -> dotted config key


def config_from_keywords(
    where: str, algorithm: str, settings: dict[str, Any], allowed: set[str] | None = None
) -> Config:
    """The Config of ``algorithm`` with ``settings`` (keyword -> value) applied to the Config defaults.

    ``where`` names the caller in messages; ``allowed`` limits the keywords (None: all of :data:`KEYWORDS`).
    An unknown keyword, a wrong type or an out-of-range value is one FlatprivError line naming the keyword.

    >>> config_from_keywords("fit", "dpsgd", {"lr": 0.5, "target_epsilon": 3.0}).optim.lr
    0.5
    >>> config_from_keywords("fit", "dpsgd", {"lr": -1})
    Traceback (most recent call last):
    ...
    flatpriv.errors.FlatprivError: fit: lr (optim.lr) = -1: must be in (0, inf]
    """
    valid = sorted(KEYWORDS if allowed is None else allowed)
    if not isinstance(algorithm, str):
        raise FlatprivError(f"{where}: algorithm must be a name such as 'dpsat', got {algorithm!r}")
    tree: dict[str, Any] = {"algorithm": algorithm, "data": {"name": USER}, "model": {"name": USER}}
    for keyword, value in settings.items():
        if keyword not in valid:
            close = difflib.get_close_matches(keyword, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FlatprivError(f"{where}: unknown keyword {keyword!r}{hint}; valid: {', '.join(valid)}")
        *sections, leaf = KEYWORDS[keyword].split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return config_from_dict(tree)
    except FlatprivError as e:
        message = str(e)
        for keyword in settings:
            key = KEYWORDS[keyword]
            if message.startswith((f"{key} ", f"{key}:")):
                message = f"{keyword} ({key}){message[len(key) :]}"
                break
        raise FlatprivError(f"{where}: {message}") from e


def keywords_from_config(cfg: Config) -> dict[str, Any]:
    """Every keyword's value in ``cfg``: ``fit(model, data, algorithm=cfg.algorithm, **keywords_from_config(cfg))``
    trains with the settings of a config-path run (its data and model sections aside)."""
    out = {}
    for keyword, key in KEYWORDS.items():
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[keyword] = node
    return out
