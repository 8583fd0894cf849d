"""The one-way import order of the five parts (docs/DEVELOPING.md, DESIGN.md), as a test.

``encoders`` < ``datasets`` < ``predictors`` < ``training`` < ``experiments`` < ``cli``: a
module may import its own part and the parts below it, never one above. The leaves
(``latlab.errors``, ``latlab.fileio``, ``latlab.jsonio``, ``latlab.confidence``) import no
part at all and every part may import them. Every ``import`` and ``from ... import`` in every
module is read with :mod:`ast`, including imports inside functions (a lazy import against the
order is still a cycle between the parts) and relative imports; ``TYPE_CHECKING`` blocks are
exempt only for the parts below. A module that imports a name another part keeps private
(``from latlab.x import _name``) is refused too; ``from latlab import __version__`` is the
one import from the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latlab"
ORDER = ("encoders", "datasets", "predictors", "training", "experiments", "cli")
LEAVES = ("errors", "fileio", "jsonio", "confidence")
#: The top-level modules that are no part: the package itself and ``python -m latlab``.
ENTRY = ("__init__", "__main__")


def _part(module: str) -> str | None:
    """The part a dotted ``latlab.`` module name belongs to (``None`` outside latlab)."""
    names = module.split(".")
    if names[0] != "latlab":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


MODULES = sorted(SRC.rglob("*.py"))


def test_every_part_and_leaf_exists():
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix in ("", ".py")}
    assert set(ORDER) | set(LEAVES) <= tops


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_one_way_order(path):
    here = _part(_module_name(path))
    bad = []
    for line, module, names in _imports(path):
        there = _part(module)
        if there is None:
            continue
        where = f"{path.relative_to(SRC)}:{line} imports {module}"
        if here in LEAVES:
            if module != "latlab.errors":
                bad.append(f"{where} (a leaf imports only latlab.errors)")
        elif there in LEAVES or there == here:
            pass
        elif there in ENTRY and names not in ([], ["__version__"]):
            bad.append(f"{where} (the package's __init__ is no part to import from)")
        elif here in ENTRY or there in ENTRY:
            pass
        elif ORDER.index(there) > ORDER.index(here):
            bad.append(f"{where} ({here} is below {there})")
        if there != here and there not in ENTRY:
            private = [n for n in names if n.startswith("_")]
            if private or any(p.startswith("_") and p != "__init__" for p in module.split(".")):
                bad.append(f"{where} names private to {there}: {private or module}")
    assert not bad, "\n".join(bad)
