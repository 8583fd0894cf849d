"""Search spaces: seeded samplers of network references, registered by name.

A space turns ``(count, seed)`` into references (``fcnn:...``, ``nb201:...``, ...); the
references' schemes build the networks. ``latlab measure --space NAME`` samples from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from latlab.errors import DataError


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """A named sampler of references; ``size`` is the number of members when finite."""

    name: str
    sample: Callable[[int, int], list[str]]
    description: str
    size: int | None = None


SPACES: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> None:
    SPACES[space.name] = space


def get_space(name: str) -> SearchSpace:
    """The registered space ``name``; raises naming it and the known spaces."""
    try:
        return SPACES[name]
    except KeyError:
        raise DataError(
            f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})"
        ) from None


def sample(name: str, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct references from space ``name`` (seeded)."""
    if count < 1:
        raise DataError(f"count must be at least 1, got {count}")
    space = get_space(name)
    if space.size is not None and count > space.size:
        raise DataError(f"space {name!r} has only {space.size} networks, asked for {count}")
    return space.sample(count, seed)


# Registration: importing the space modules registers their schemes and samplers.
import latlab.datasets.spaces.bnn  # noqa: E402, F401
from latlab.datasets.spaces import (  # noqa: E402, F401
    blocks,
    cnn,
    fcnn,
    nb201,
)
