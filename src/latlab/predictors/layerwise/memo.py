"""Feature rows of a network's structure, computed once per process.

The layer-wise models' per-network work -- the mapping model's pair rows and each mapped
layer's feature record -- is a pure function of the network's structure, yet every fitted
model recomputed it: ``latlab compare`` evaluates 15 layer-wise models (5 models x 3 kinds of
layer time) on the same 128 networks, which spent most of its evaluation time building the
same rows 15 times. The memo keys them by :func:`structure_key` and keeps the most recent
entries (a bounded LRU: a NAS loop predicting millions of networks does not grow it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from latlab.encoders.ir import NetworkGraph

T = TypeVar("T")


def structure_key(graph: NetworkGraph) -> tuple[str, tuple[int, ...]]:
    """What the feature rows depend on: the graph's content digest (ops, shapes, attributes,
    bit widths, edges; not names) and which layers feed a graph output (a fan-out feature)."""
    outputs = set(graph.outputs)
    layers = graph.layers
    feeding = tuple(i for i, layer in enumerate(layers) if outputs.intersection(layer.outputs))
    return graph.digest, feeding


class Memo(Generic[T]):
    """A bounded least-recently-used map of computed values. Values are shared between
    callers: treat them as read-only (copy before changing one)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under ``key``, computed (and stored) on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = compute()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
