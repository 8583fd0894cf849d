"""One registry idiom: names mapped to objects or to lazy ``"module:attr"`` strings.

A leaf module (it imports only :mod:`latlab.errors`). A registry (:class:`Registry`) is a
read-only mapping from a name to a registered object, where an entry may be given as the
string ``"package.module:attr"`` and is imported only when first looked up -- so that listing
the names (``latlab --help``, an error message naming the known ones) imports none of the
modules, and a module's import never has to happen for its name to be known.

Third-party plug-ins register through an entry-point group (``[project.entry-points.
"latlab.predictors"]`` ``myname = "mypkg.mod:MyPredictor"`` in their ``pyproject.toml``): the
group's names are added, lazily too, the first time the registry is listed or misses a name.
Built-in entries win over plug-ins of the same name.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Generic, TypeVar

from latlab.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")


def load_target(target: str) -> object:
    """The object a ``"package.module:attr"`` string names (its module imported now)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise DataError(f"a lazy registry entry must be 'module:attr', got {target!r}")
    obj: object = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Mapping[str, T], Generic[T]):
    """Name -> object, entries given as objects or as lazy ``"module:attr"`` strings.

    ``kind`` names what is registered in messages (``"predictor"``); ``group`` is the
    entry-point group plug-ins register in (``None``: none); ``check(obj)`` validates a loaded
    entry (raise :class:`TypeError` or return ``False`` to refuse it); ``entries`` are the
    built-in ones (name -> object or ``"module:attr"``).
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        check: Callable[[object], bool] | None = None,
        entries: Mapping[str, T | str] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._entries: dict[str, T | str] = dict(entries or {})
        self._discovered = group is None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ registering

    def register(self, name: str, entry: T | str) -> None:
        """Register ``entry`` (an object, or ``"module:attr"`` to import on first use).

        A lazy string never replaces a loaded object (the module registered it already).
        """
        with self._lock:
            if isinstance(entry, str) and not isinstance(self._entries.get(name, entry), str):
                return
            self._entries[name] = entry

    def __setitem__(self, name: str, entry: T | str) -> None:
        """``registry[name] = entry`` is :meth:`register` (for tables filled in place)."""
        self.register(name, entry)

    def _discover(self) -> None:
        """Add the entry-point group's names (lazily), once."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            assert self.group is not None
            for ep in metadata.entry_points(group=self.group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = ep.value

    # ------------------------------------------------------------------ looking up

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            self._discover()
        entry = self._entries[name]
        if not isinstance(entry, str):
            return entry
        with self._lock:
            entry = self._entries[name]
            if isinstance(entry, str):
                loaded = load_target(entry)
                if self._check is not None and not self._check(loaded):
                    raise DataError(f"{self.kind} entry {name}={entry!r} is not a {self.kind}")
                current = self._entries[name]
                # The import may have registered the object itself (a decorator): keep that.
                self._entries[name] = loaded if isinstance(current, str) else current  # type: ignore[assignment]
                entry = self._entries[name]
            return entry  # type: ignore[return-value]

    def get(self, name: str, default: T | None = None) -> T | None:  # type: ignore[override]
        """``registry[name]``, or ``default`` for a name nobody registered.

        A loaded entry is returned by one dict look-up: the op-rule and exporter tables are
        read once per layer.
        """
        entry = self._entries.get(name)
        if entry is not None and not isinstance(entry, str):
            return entry
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def is_lazy(self, name: str) -> bool:
        """Whether ``name`` is registered but its module not imported yet."""
        return isinstance(self._entries.get(name), str)

    def load_all(self) -> dict[str, T]:
        """Every entry, loaded (imports every registered module)."""
        return {name: self[name] for name in self}

    def unknown(self, name: str) -> str:
        """The one-line message for a name nobody registered (lists the known ones)."""
        return f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self))})"
