"""Where configs come from: TOML presets (``src/flatpriv/presets``, linked as ``configs/``), TOML files and
``--set a.b=value`` overrides, resolved into one validated :class:`~flatpriv.config.Config`."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from .config import Config, config_from_dict
from .errors import FlatprivError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "default"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FlatprivError(f"cannot read config file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise FlatprivError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise FlatprivError(f"{path} is not valid TOML: {e}") from e


def preset_dict(name: str) -> dict[str, Any]:
    """A preset by name. Names only: ``--preset ../../x`` would otherwise read any TOML file on the machine."""
    path = PRESET_DIR / f"{name}.toml"
    if name not in preset_names() or not path.is_file():
        raise FlatprivError(f"no preset named '{name}' (see `flatpriv presets`: {', '.join(preset_names())})")
    return _read_toml(path)


def describe_presets() -> list[tuple[str, str]]:
    return [(n, str(preset_dict(n).get("description", ""))) for n in preset_names()]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value``; the value is read as a TOML value (numbers, booleans, lists), else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise FlatprivError(f"--set expects key=value (e.g. optim.lr=0.1), got '{text}'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def _set(tree: dict[str, Any], path: list[str], value: Any, raw_key: str) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FlatprivError(f"unknown config key '{raw_key}'")
    node[path[-1]] = value


def resolve(
    preset: str | None = None, config_file: str | None = None, overrides: typing.Sequence[str] = ()
) -> tuple[Config, str]:
    """Preset or file, then ``--set`` overrides, validated. Returns the config and a short name for the run."""
    if preset and config_file:
        raise FlatprivError("give either --preset or --config, not both")
    if config_file:
        data, name = _read_toml(Path(config_file)), Path(config_file).stem
    else:
        name = preset or DEFAULT_PRESET
        data = preset_dict(name)
    hints = {f.name: f.type for f in dataclasses.fields(Config)}
    for text in overrides:
        path, value = parse_override(text)
        section = path[0]
        # A string field gets the raw text, so `--set data.root=123` means the directory "123".
        if len(path) == 2 and section in hints and isinstance(value, (int, float, bool)):
            cls = typing.get_type_hints(Config).get(section)
            if dataclasses.is_dataclass(cls) and typing.get_type_hints(cls).get(path[1]) is str:
                value = text.partition("=")[2].strip()
        _set(data, path, value, ".".join(path))
    return config_from_dict(data), name
