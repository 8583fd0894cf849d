"""Loading skops files that may hold only the types latlab trusts (one loader for all).

skops refuses, by default, every type outside its own safe list; a caller names the extra
types its own models contain (a random forest's ``Tree``, crepes' ``DifficultyEstimator``, ...)
and a file needing any other type is refused with :class:`BundleError`, so a tampered or
foreign file cannot make latlab instantiate arbitrary classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from latlab.errors import BundleError

#: The types a saved scikit-learn tree ensemble needs beyond skops' defaults.
TREE_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)


#: Module prefixes whose every type the layer-wise models' files may hold (their forests and
#: mapping trees are plain scikit-learn estimators on numpy arrays).
SKLEARN_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.")


def load_trusted_skops(
    data: bytes,
    where: Path | str,
    trusted: Iterable[str] = TREE_TYPES,
    trusted_prefixes: tuple[str, ...] = (),
) -> Any:
    """The object in skops ``data`` if it needs no type beyond skops' defaults, ``trusted``
    and the types of the modules ``trusted_prefixes`` name.

    ``where`` (the file or its folder) is named in the messages: corrupt file, untrusted
    types (listed), or a load failure.
    """
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises zipfile/JSON errors for corrupt files
        raise BundleError(f"corrupt skops model in {where}: {exc}") from None
    unknown = sorted(t for t in set(untrusted) - set(trusted) if not t.startswith(trusted_prefixes))
    if unknown:
        raise BundleError(
            f"skops model in {where} contains types latlab does not trust: {', '.join(unknown)}"
        )
    try:
        return sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise BundleError(f"cannot load skops model in {where}: {exc}") from None
