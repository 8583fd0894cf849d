"""Totals of chain-structured networks from the totals of their segments.

Spaces whose networks are a chain of segments (stem, blocks, head: FBNet, OFA) resolve a
reference to a :class:`~latlab.encoders.ir.LazyNetworkGraph` whose totals are the sum of the
totals of its segments, each built alone once on its input shape and cached: encoding 5,000
networks then builds a few hundred small segment graphs instead of 5,000 networks of 150-300
layers. Sums are exact for every count; depth (compute layers on the longest path) adds up
along a chain because every segment has one input and one output. A test compares the fast
totals with the fully built graph's.

The serving fast path (:class:`ChainGraph`) goes one step further: a segment carries, beside
its totals, its raw network-summary row (:func:`latlab.encoders.vector.summary_vector` of the
segment: the summary encoder's own implementation, applied once per distinct segment). The
summary is linear in the totals, so a network's raw row is the sum of its segments' rows (exact:
integer-valued float64 well below 2**53), and encoding a network for serving never builds its
:class:`~latlab.encoders.ir.NetworkTotals` at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from latlab.encoders.base import KINDS
from latlab.encoders.ir import COUNT_FIELDS, LazyNetworkGraph, NetworkGraph, NetworkTotals

_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}


#: Vector layout: COUNT_FIELDS, layers, depth, then counts and MACs per layer kind.
_N = len(COUNT_FIELDS)


def totals_vector(totals: NetworkTotals) -> np.ndarray:
    """A segment's totals as one int64 vector (sums of such vectors are a chain's totals)."""
    if totals.unknown_ops or any(k not in _KIND_INDEX for k in totals.op_counts):
        raise ValueError(f"segment with unknown ops or kinds: {totals.op_counts}")
    v = np.zeros(_N + 2 + 2 * len(KINDS), dtype=np.int64)
    v[:_N] = [getattr(totals, f) for f in COUNT_FIELDS]
    v[_N], v[_N + 1] = totals.n_layers, totals.depth
    for k, c in totals.op_counts.items():
        v[_N + 2 + _KIND_INDEX[k]] = c
    for k, m in totals.op_macs.items():
        v[_N + 2 + len(KINDS) + _KIND_INDEX[k]] = m
    return v


def sum_totals(vectors: Sequence[np.ndarray]) -> NetworkTotals:
    """The totals of a chain of segments given by their :func:`totals_vector`."""
    v = np.add.reduce(vectors).tolist() if len(vectors) else [0] * (_N + 2 + 2 * len(KINDS))
    nk = len(KINDS)
    counts, macs = v[_N + 2 : _N + 2 + nk], v[_N + 2 + nk :]
    return NetworkTotals(
        **dict(zip(COUNT_FIELDS, v[:_N], strict=True)),
        n_layers=v[_N],
        depth=v[_N + 1],
        op_counts={KINDS[i]: c for i, c in enumerate(counts) if c},
        op_macs={KINDS[i]: m for i, (c, m) in enumerate(zip(counts, macs, strict=True)) if c},
        unknown_ops=(),
    )


def chain_digest(space: str, canonical: str, input_shape: tuple[int, ...]) -> str:
    """Digest of a chain network from its space, canonical reference and input shape."""
    return hashlib.sha1(f"{space}|{canonical}|{input_shape}".encode()).hexdigest()


class Segment(NamedTuple):
    """One segment built alone: its :func:`totals_vector` and its raw summary row."""

    totals: np.ndarray
    summary: np.ndarray


def join_segments(parts: Sequence[Segment]) -> Segment:
    """Consecutive segments as one (a block made of sub-segments)."""
    return Segment(
        np.add.reduce([p.totals for p in parts]), np.add.reduce([p.summary for p in parts])
    )


def segment_of(graph: NetworkGraph) -> Segment:
    """The :class:`Segment` of a segment's built graph (one input, one output)."""
    from latlab.encoders.vector import summary_vector

    return Segment(totals_vector(graph.totals), summary_vector(graph))


class ChainGraph(LazyNetworkGraph):
    """The lazy graph of a chain network whose totals and raw summary row are the sums of its
    segments' (``parts``: called once, on first need; the layers are still built only when
    something walks them)."""

    def __init__(
        self,
        name: str,
        build: Callable[[], NetworkGraph],
        meta: dict[str, Any],
        parts: Callable[[], Sequence[Segment]],
        digest_value: str,
    ) -> None:
        super().__init__(name, build, meta, self._sum_parts, digest_value)
        self._parts = parts

    @cached_property
    def parts(self) -> Sequence[Segment]:
        return self._parts()

    def _sum_parts(self) -> NetworkTotals:
        return sum_totals([p.totals for p in self.parts])

    def summary_row(self) -> np.ndarray:
        """The raw (unscaled) summary row, equal to ``summary_vector`` of the built graph."""
        return np.add.reduce([p.summary for p in self.parts])


def own_graph(
    reference: str, prefix: str, parse: Callable[[str], Any], graph: Callable[[Any], Any]
) -> NetworkGraph | None:
    """A chain space's :meth:`~latlab.datasets.spaces.base.SearchSpace.fast_resolve`: the
    scheme's own graph of ``reference`` (``graph(parse(body))``), without the general
    resolver's parsing and cache (most of its cost per network when serving a table);
    ``None`` for another scheme or an invalid reference, which the general path names."""
    from latlab.errors import NetworkReferenceError

    if not reference.startswith(f"{prefix}:"):
        return None
    try:
        choice = parse(reference[len(prefix) + 1 :])
    except NetworkReferenceError:
        return None
    return graph(choice)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- spatial scaling


class SpatialFit(NamedTuple):
    """A segment's totals and summary as linear functions of its square input's spatial size:
    coefficients of ``(1, h**2)``, and of ``o**2`` (``o = (h - 1) // stride + 1``, the output
    side of a "same"-padded layer) when the segment is strided."""

    totals: np.ndarray
    summary: np.ndarray
    stride: int


#: Input sides a :class:`SpatialFit` builds its segment at (three distinct ``(1, h², o²)``
#: rows for stride 2).
_FIT_SIDES = (8, 9, 16)


def _spatial_basis(sides: np.ndarray, stride: int) -> np.ndarray:
    h = np.asarray(sides, dtype=np.float64)
    cols = [np.ones_like(h), h * h]
    if stride != 1:
        o = (np.asarray(sides, dtype=np.int64) - 1) // stride + 1
        cols.append(o.astype(np.float64) ** 2)
    return np.stack(cols, axis=1)


def fit_spatial(build_at: Callable[[int], Segment], stride: int = 1) -> SpatialFit:
    """Fit a segment whose every count is linear in its input's and output's element counts
    (convolutions, norms, activations, element-wise ops and global pooling are) from two or
    three builds at small sides: the segment's rows at any side then cost a dot product
    instead of a build. Exact after rounding (every count is an integer); a test compares the
    fitted rows with built ones at every side a space uses."""
    sides = _FIT_SIDES if stride != 1 else _FIT_SIDES[:2]
    basis = _spatial_basis(np.array(sides), stride)
    segs = [build_at(h) for h in sides]
    t = np.linalg.solve(basis, np.array([s.totals for s in segs], dtype=np.float64))
    s = np.linalg.solve(basis, np.array([s.summary for s in segs], dtype=np.float64))
    return SpatialFit(t, s, stride)


def spatial_summaries(fit: SpatialFit, sides: Sequence[int]) -> np.ndarray:
    """The raw summary rows of a fitted segment at each input side (one row per side)."""
    return np.rint(_spatial_basis(np.asarray(sides), fit.stride) @ fit.summary)


def spatial_segment(fit: SpatialFit, side: int) -> Segment:
    """The :class:`Segment` of a fitted segment at input side ``side``."""
    basis = _spatial_basis(np.array([side]), fit.stride)
    totals = np.rint(basis @ fit.totals)[0].astype(np.int64)
    return Segment(totals, np.rint(basis @ fit.summary)[0])


# --------------------------------------------------------------------------- batches


class ChainBatch:
    """Networks of one chain space resolved together (the space's
    :meth:`~latlab.datasets.spaces.base.SearchSpace.fast_resolve_many`).

    The space fills ``arrays`` with one row per network, computed for the whole batch at once
    by array indexing (``choices``: the option index per position; ``tokens``: the token
    counts, columns named by ``columns["tokens"]``; ``summary``: the raw summary row); the
    encoders gather these rows (:func:`latlab.encoders.base.batch_rows`) instead of reading
    each graph. Anything else about a network (meta, totals, layers, digest) comes from the
    space's per-network graph, ``graph_of(row)``, made on first need.
    """

    def __init__(
        self,
        family: str,
        references: Sequence[str],
        arrays: dict[str, np.ndarray],
        columns: dict[str, tuple[str, ...]],
        graph_of: Callable[[int], NetworkGraph],
    ) -> None:
        self.family = family
        self.references = references
        self.arrays = arrays
        self.columns = columns
        self.graph_of = graph_of

    def array(self, key: str) -> np.ndarray | None:
        return self.arrays.get(key)

    def graphs(self, rows: Sequence[int]) -> list[BatchGraph]:
        """The graphs of ``rows`` (indices into :attr:`references`)."""
        return [BatchGraph(self, int(i)) for i in rows]


class BatchGraph(LazyNetworkGraph):
    """One network of a :class:`ChainBatch`: its reference, family and summary row from the
    batch; its meta, totals, digest and layers from the space's own graph of it
    (:attr:`own`, made on first access), so that they are exactly the per-network path's."""

    def __init__(self, batch: ChainBatch, row: int) -> None:  # no super(): all is lazy
        self.batch = batch
        self.batch_row = row
        self.name = batch.references[row]

    @property
    def reference(self) -> str:
        return self.name

    @property
    def family(self) -> str:
        return self.batch.family

    @cached_property
    def own(self) -> NetworkGraph:
        """The space's per-network graph of this network."""
        return self.batch.graph_of(self.batch_row)

    @cached_property
    def meta(self) -> dict[str, Any]:  # type: ignore[override]
        return self.own.meta

    @cached_property
    def built(self) -> NetworkGraph:
        return self.own.built if isinstance(self.own, LazyNetworkGraph) else self.own

    @cached_property
    def totals(self) -> NetworkTotals:
        return self.own.totals

    @cached_property
    def digest(self) -> str:
        return self.own.digest

    def summary_row(self) -> np.ndarray:
        """The raw summary row (the batch's, equal to ``summary_vector`` of the built graph)."""
        return self.batch.arrays["summary"][self.batch_row]
