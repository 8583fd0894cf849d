"""The NAS fast path: a bundle's predictions over thousands of networks, with a feature cache.

A NAS loop asks for the latency of the same candidates again and again (the population, its
mutants, the archive). Encoding a network -- resolving its reference to the IR and turning
the IR into the predictor's input (a feature row, a cell graph) -- costs more than running the
model on it, so :class:`FeatureCache` keeps each network's *encoded input*, keyed by the
network's hash, and a repeated candidate costs only its share of the model's forward pass.

Networks are given as references (``nb201:|...|``, ``fcnn:8-16-4``, ``zoo:resnet18``...),
:class:`~latlab.encoders.ir.NetworkGraph` objects, or bare NAS-Bench-201 arch strings
(``|nor_conv_3x3~0|+|...|``, read as ``nb201:`` references).

The split of a predictor into *encode* and *predict-encoded* is the predictor's own
(``encode(graphs)`` / ``predict_encoded(items)``, part of the predictor contract,
:class:`~latlab.predictors.base.Predictor`): LightGBM, random forest and FCNN cache feature
rows, the GCN caches its light torch-geometric graphs, any other predictor caches the resolved
IR (the resolution is most of its encoding cost). ``predict`` itself runs through the same two
methods, so the cached and the direct path give identical predictions (a test checks it) and
this module knows nothing of any predictor's internals.

Keys: a reference string is its own key (after normalisation: stripped, bare arch strings
prefixed with ``nb201:``); a graph is keyed by its IR digest and its reference, so that graphs
built alike share an entry and a graph never aliases a different network.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latlab.datasets.spaces import SPACES
from latlab.encoders.ir import NetworkGraph
from latlab.errors import LatlabError, NetworkReferenceError
from latlab.predictors.base import Predictor

log = logging.getLogger(__name__)

#: Default capacity of a bundle's feature cache (networks): the whole nb201 space and more.
DEFAULT_CACHE_SIZE = 65536


# --------------------------------------------------------------------------- network keys


def normalise_network(network: Any, row: int | None = None) -> str | NetworkGraph:
    """A reference or graph; bare bodies a space serves (NAS-Bench-201 arch strings) become
    references of that space (:func:`~latlab.datasets.spaces.bare_reference`).

    Raises :class:`NetworkReferenceError` (naming the row when given) for anything else.
    """
    if isinstance(network, NetworkGraph):
        return network
    if isinstance(network, str):
        from latlab.datasets.references import normalise_reference

        return normalise_reference(network)
    where = f"row {row}: " if row is not None else ""
    raise NetworkReferenceError(
        f"{where}a network must be a reference string, an nb201 arch string or a NetworkGraph, "
        f"got {type(network).__name__} {network!r}"
    )


def network_key(network: str | NetworkGraph) -> str:
    """The cache key of a normalised network (see the module docstring)."""
    if isinstance(network, str):
        return network
    return f"graph:{network.digest}:{network.reference}"


def with_row(exc: LatlabError, row: int, network: Any) -> LatlabError:
    """The same kind of error, its message prefixed with the row (and the network) it is about."""
    text = str(exc)
    name = network if isinstance(network, str) else getattr(network, "reference", repr(network))
    if str(name) not in text:
        text = f"{text} (network {name!r})"
    return type(exc)(f"row {row}: {text}")


# --------------------------------------------------------------------------- fast path


def resolve_fast(network: str | NetworkGraph) -> NetworkGraph:
    """:func:`~latlab.datasets.references.resolve`, through the space's fast path where the
    reference's space has one (:meth:`SearchSpace.fast_resolve`: nb201's table look-up)."""
    from latlab.datasets.references import resolve

    if isinstance(network, str):
        prefix = network.partition(":")[0]
        if prefix not in SPACES.fast and SPACES.is_lazy(prefix):
            SPACES[prefix]  # a lazily registered space: loading it indexes its fast path
        fast = SPACES.fast.get(prefix)
        if fast is not None:
            graph = fast(network)
            if graph is not None:
                return graph
    return resolve(network)


def resolve_fast_many(
    networks: Sequence[str | NetworkGraph], rows: Sequence[int] | None = None
) -> list[NetworkGraph]:
    """:func:`resolve_fast` of each network, the references of a space with a batch fast path
    resolved together (:meth:`SearchSpace.fast_resolve_many`); a network the batch does not
    take goes through :func:`resolve_fast`, whose errors name it, prefixed by its row
    (``rows[i]``, else its index)."""
    out: list[NetworkGraph | None] = [n if isinstance(n, NetworkGraph) else None for n in networks]
    by_prefix: dict[str, list[int]] = {}
    for i, n in enumerate(networks):
        if isinstance(n, str):
            by_prefix.setdefault(n.partition(":")[0], []).append(i)
    for prefix, idx in by_prefix.items():
        if prefix not in SPACES.fast_many and SPACES.is_lazy(prefix):
            SPACES[prefix]  # a lazily registered space: loading it indexes its fast path
        many = SPACES.fast_many.get(prefix)
        if many is not None and len(idx) > 1:
            refs = [str(networks[i]) for i in idx]
            for i, g in zip(idx, many(refs), strict=True):
                out[i] = g
    graphs = []
    for i, g in enumerate(out):
        if g is None:
            try:
                g = resolve_fast(networks[i])
            except LatlabError as exc:
                raise with_row(exc, rows[i] if rows is not None else i, networks[i]) from None
        graphs.append(g)
    return graphs


# --------------------------------------------------------------------------- the cache


class FeatureCache:
    """A bounded LRU of encoded networks, safe to share between threads.

    ``hits``, ``misses`` and ``encoded`` (networks actually encoded) count what happened, so
    that callers and tests can see that a repeated network skipped encoding.
    """

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE) -> None:
        if int(maxsize) < 0:
            raise ValueError(f"cache size must be >= 0, got {maxsize!r}")
        self.maxsize = int(maxsize)
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.encoded = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The cached item of each key, ``None`` where absent (counted as hits and misses)."""
        out: list[Any] = []
        with self._lock:
            data = self._data
            for k in keys:
                item = data.get(k)
                if item is not None:
                    data.move_to_end(k)
                out.append(item)
            found = sum(1 for item in out if item is not None)
            self.hits += found
            self.misses += len(out) - found
        return out

    def put_many(self, keys: Sequence[str], items: Sequence[Any]) -> None:
        with self._lock:
            self.encoded += len(keys)
            if self.maxsize == 0:
                return
            data = self._data
            for k, item in zip(keys, items, strict=True):
                data[k] = item
                data.move_to_end(k)
            while len(data) > self.maxsize:
                data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = self.encoded = 0

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._data),
            "maxsize": self.maxsize,
            "hits": self.hits,
            "misses": self.misses,
            "encoded": self.encoded,
        }


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class Stage:
    """A predictor split into ``encode(graphs) -> items`` and ``predict(items) -> ms``."""

    kind: str
    encode: Callable[[list[NetworkGraph]], list[Any]]
    predict: Callable[[list[Any]], np.ndarray]


def stage_for(predictor: Predictor) -> Stage:
    """The encode/predict split of a fitted predictor: its own ``encode`` /
    ``predict_encoded`` (:class:`~latlab.predictors.base.LatencyPredictor` gives every
    predictor both; predictors whose encoding is costly override them)."""
    return Stage(predictor.encoding, predictor.encode, predictor.predict_encoded)


# --------------------------------------------------------------------------- the fast path


class CachedPredictor:
    """A fitted predictor behind a :class:`FeatureCache` (what a loaded bundle predicts with).

    ``predict(networks)`` encodes only the networks the cache lacks (each distinct one once,
    also within a call) and runs the model once over the whole call, in input order.
    """

    def __init__(self, predictor: Predictor, cache: FeatureCache | None = None) -> None:
        self.predictor = predictor
        self.cache = cache if cache is not None else FeatureCache()
        self.stage = stage_for(predictor)

    def normalise(self, networks: Sequence[Any]) -> list[str | NetworkGraph]:
        if isinstance(networks, str | NetworkGraph):
            networks = [networks]
        return [normalise_network(n, i) for i, n in enumerate(networks)]

    def encoded(self, networks: Sequence[str | NetworkGraph]) -> list[Any]:
        """The encoded input of each (normalised) network, from the cache where it is."""
        keys = [network_key(n) for n in networks]
        items = self.cache.get_many(keys)
        missing: dict[str, int] = {}
        for i, item in enumerate(items):
            if item is None and keys[i] not in missing:
                missing[keys[i]] = i
        if missing:
            rows = list(missing.values())
            graphs = resolve_fast_many([networks[i] for i in rows], rows)
            try:
                new = self.stage.encode(graphs)
            except LatlabError as exc:
                raise self._row_error(exc, graphs, rows, networks) from None
            self.cache.put_many(list(missing), new)
            by_key = dict(zip(missing, new, strict=True))
            items = [by_key[k] if it is None else it for k, it in zip(keys, items, strict=True)]
        return items

    def _row_error(
        self, exc: LatlabError, graphs: list[NetworkGraph], rows: list[int], nets: Sequence[Any]
    ) -> LatlabError:
        """Find the first network the encoder refuses, so that the error names its row."""
        for g, i in zip(graphs, rows, strict=True):
            try:
                self.stage.encode([g])
            except LatlabError as one:
                return with_row(one, i, nets[i])
        return exc

    def predict(self, networks: Sequence[Any]) -> np.ndarray:
        """Latency (ms) of each network, in input order."""
        nets = self.normalise(networks)
        if not nets:
            return np.zeros(0)
        out = self.stage.predict(self.encoded(nets))
        return np.asarray(out, dtype=float).reshape(-1)
