"""The one-way import order of the five parts (docs/DEVELOPING.md, DESIGN.md), as a test.

``encoders`` < ``datasets`` < ``predictors`` < ``training`` < ``experiments`` < ``cli``: a
module may import its own part and the parts below it, never one above. The leaves
(``latlab.errors``, ``fileio``, ``jsonio``, ``confidence``, ``registry``) import no part at all
and every part may import them. Every ``import`` and ``from ... import`` in every module is
read with :mod:`ast`, including imports inside functions and ``TYPE_CHECKING`` blocks (a lazy
import against the order is still a cycle between the parts) and relative imports. A module
that imports a name another module keeps private (``from latlab.x import _name``) is refused
too; ``from latlab import __version__`` is the one import from the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latlab"
ORDER = ("encoders", "datasets", "predictors", "training", "experiments", "cli")
LEAVES = ("errors", "fileio", "jsonio", "confidence", "registry")
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
#: Private names still imported across modules, in files other work was changing when this
#: guard was written (make them public there, then empty this).
PRIVATE_IMPORTS_LEFT = {("datasets/bench/profile.py", "latlab.datasets.bench.trace")}


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
        left = (str(path.relative_to(SRC)), module) in PRIVATE_IMPORTS_LEFT
        if there not in ENTRY and not left:  # no module imports a name another keeps private
            private = [n for n in names if n.startswith("_")]
            if private or any(p.startswith("_") and p != "__init__" for p in module.split(".")):
                bad.append(f"{where} names private to {module}: {private or module}")
    assert not bad, "\n".join(bad)


def _top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (module-level statements only, outside
    ``if TYPE_CHECKING``), a ``from pkg import sub`` counted as an import of ``pkg.sub``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            for a in node.names:
                sub = f"{module}.{a.name}"
                if (SRC.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    SRC.parent / sub.replace(".", "/") / "__init__.py"
                ).is_file():
                    out.add(sub)
    return {m for m in out if m.startswith("latlab")}


def test_no_import_cycle_at_module_level():
    """Importing any module never re-enters a module that is still initialising (the old
    ``datasets/spaces/__init__`` <-> its spaces and ``onnx_export`` <-> ``binary_onnx``)."""
    import networkx as nx

    graph = nx.DiGraph()
    for path in MODULES:
        name = _module_name(path)
        for dep in _top_level_imports(path):
            # An explicit import of a parent package counts (its names are used); the
            # implicit one of every submodule import (parents initialise first) does not.
            if dep != name:
                graph.add_edge(name, dep)
    cycles = sorted(sorted(c) for c in nx.simple_cycles(graph))
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)
