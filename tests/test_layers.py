"""The package's layer map, held as a test: every module imports only the layers below it.

A unit is a subpackage of ``flatpriv`` (``step``, ``privacy``, ...) or a root module (``train``, ``config``, ...).
``LAYERS[unit]`` is the set of other units it may import. Imports inside functions count too, and inside the
package every import is relative (one import style).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import flatpriv

PACKAGE = Path(flatpriv.__file__).parent
BASE = {"errors", "tree", "config"}  # leaves everyone may use
STACK = BASE | {"privacy", "step", "data", "models", "results", "checkpoint", "plots", "memorization", "attacks"}
STACK |= {"dynamics", "progress"}
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "tree": set(),
    "progress": {"errors"},  # progress bars and log lines (tqdm)
    "plots": {"data"},  # the matplotlib cache goes under the data cache directory
    "config": {"errors"},
    "config_io": {"config", "errors"},
    "results": {"errors", "__init__"},  # __version__ for provenance
    "checkpoint": {"results", "errors"},
    "models": {"config", "errors"},
    "data": {"config", "errors"},
    "attacks": {"errors"},
    "memorization": {"errors"},
    "dynamics": {"errors"},
    "privacy": BASE | {"attacks"},  # the audit reads the attacks' array helpers
    "step": BASE | {"privacy"},
    "train": STACK,
    "api": STACK | {"train"},  # flatpriv.fit and flatpriv.Step: user models and data through train and step
    "pools": STACK | {"train"},
    "analyses": STACK | {"train", "pools"},
    "studies": STACK | {"train", "pools", "analyses", "config_io"},
    "cli": STACK | {"train", "pools", "analyses", "studies", "config_io"},
    "__main__": {"cli"},
    "__init__": STACK | {"train", "pools", "config_io", "api"},  # the lazy facade: flatpriv.train, flatpriv.fit, ...
}
TORCH_FREE = [
    "flatpriv.privacy",
    "flatpriv.privacy.accounting",
    "flatpriv.privacy.pld",
    "flatpriv.privacy.audit",
    "flatpriv.attacks",
    "flatpriv.memorization",
    "flatpriv.memorization.feldman",
    "flatpriv.memorization.entropy",
]


def _unit(parts: list[str]) -> str:
    """flatpriv.step.dp -> 'step'; flatpriv.train -> 'train'; flatpriv (or its __version__) -> '__init__'."""
    return "__init__" if len(parts) < 2 or parts[1] == "__version__" else parts[1]


def violations(root: Path) -> list[str]:
    """Every import in the package under ``root`` that goes against :data:`LAYERS` or is absolute."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        module = parts[:-1] if is_init else parts
        package = module if is_init else module[:-1]
        unit = _unit(module)
        where = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [
                    f"{where}: absolute import of {a.name}" for a in node.names if a.name.split(".")[0] == "flatpriv"
                ]
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0:
                if (node.module or "").split(".")[0] == "flatpriv":
                    found.append(f"{where}: absolute import of {node.module}")
                continue
            base = package[: len(package) - node.level + 1]
            if node.module:
                targets = [base + node.module.split(".")]
            else:  # `from .. import plots, results`: each name may be a module of its own
                targets = [base + [a.name] for a in node.names]
            for target in targets:
                other = _unit(target)
                if other != unit and other not in LAYERS.get(unit, set()):
                    found.append(f"{where}: {unit} imports {'.'.join(target)} ({other})")
    return found


def test_every_import_follows_the_layer_map() -> None:
    assert violations(PACKAGE) == []


def test_every_unit_is_on_the_map() -> None:
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert units == set(LAYERS), units ^ set(LAYERS)


def test_the_map_catches_a_wrong_import(tmp_path: Path) -> None:
    copy = tmp_path / "flatpriv"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    ascent = copy / "step" / "ascent.py"
    ascent.write_text(ascent.read_text() + "\nfrom ..pools import train_models  # wrong: step is below pools\n")
    train = copy / "train.py"
    train.write_text(train.read_text() + "\nfrom flatpriv.step import take_step  # wrong: absolute\n")
    curvature = copy / "memorization" / "feldman.py"
    curvature.write_text(curvature.read_text() + "\ndef f():\n    from ..train import train  # wrong, in a function\n")
    found = violations(copy)
    assert len(found) == 3, found
    assert any("step imports flatpriv.pools" in f for f in found)
    assert any("absolute import of flatpriv.step" in f for f in found)
    assert any("memorization imports flatpriv.train" in f for f in found)


def test_subpackage_docstrings_say_what_lives_there_and_what_they_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "Imports" in doc and len(doc) > 200, init


def test_root_holds_about_ten_modules() -> None:
    assert len([p for p in PACKAGE.glob("*.py") if not p.name.startswith("__")]) <= 10


def test_accounting_audit_attacks_memorization_load_no_torch() -> None:
    code = f"import sys\nfor m in {TORCH_FREE!r}: __import__(m)\nassert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
