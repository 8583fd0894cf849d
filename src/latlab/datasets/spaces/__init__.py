"""Search spaces: plug-ins that own a family of networks, registered by name.

A space (:class:`~latlab.datasets.spaces.base.SearchSpace`) owns its reference syntax, IR
builder, encodings, sampling, mutation and serving fast path; predictors, training, serving
and NAS ask the registry (:func:`get_space`, :func:`space_of`) instead of naming a space.
``latlab measure --space NAME`` samples from here. The built-in spaces are lazy entries
(:data:`~latlab.datasets.spaces.base.BUILTIN_SPACES`): importing this package imports none
of them. See :mod:`latlab.datasets.spaces.base`.
"""

from __future__ import annotations

from latlab.datasets.spaces.base import (
    SPACES,
    Genotype,
    SearchSpace,
    bare_reference,
    get_space,
    load_all,
    register_space,
    searchable_spaces,
    space_of,
)
from latlab.errors import DataError

__all__ = [
    "SPACES",
    "Genotype",
    "SearchSpace",
    "bare_reference",
    "get_space",
    "load_all",
    "register_space",
    "sample",
    "searchable_spaces",
    "space_of",
]


def sample(name: str, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct references from space ``name`` (seeded)."""
    if count < 1:
        raise DataError(f"count must be at least 1, got {count}")
    space = get_space(name)
    if space.size is not None and count > space.size:
        raise DataError(f"space {name!r} has only {space.size} networks, asked for {count}")
    return space.sample(count, seed)
