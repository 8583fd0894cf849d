"""Vector encoders: one fixed-length row of numbers per network, as scikit-learn transformers.

* :class:`SummaryEncoder` -- network summary (MACs, FLOPs, parameters, bytes, layers, depth,
  per-kind layer counts and MACs); works for any network and reads only ``graph.totals``, so it
  is fast on lazy nb201 graphs.
* :class:`LayerWidthEncoder` -- the padded vector of layer widths of fully connected networks,
  the input of the FCNN estimator (Beglaryan & Ringhofer).
* :class:`Nb201OneHotEncoder` -- the 6 edges x 5 operations one-hot of a NAS-Bench-201 cell.

Concatenate them with scikit-learn: ``make_union(SummaryEncoder(), Nb201OneHotEncoder())`` (or
:func:`make_vector_encoder`), and save any of them, or such a union, as JSON with
:func:`latlab.encoders.base.encoder_to_state`.

Every encoder takes a sequence of :class:`NetworkGraph` and returns a float64 array of shape
``(n_networks, n_features)``; a network whose features cannot be computed raises
:class:`latlab.errors.FeatureError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latlab.encoders.base import (
    KINDS,
    MAC_KINDS,
    EncoderStateMixin,
    batch_rows,
    canonical_kind,
    check_graphs,
    feature_names,
)
from latlab.encoders.ir import NetworkGraph
from latlab.encoders.layer_features import layer_geometry
from latlab.encoders.nb201_cell import EDGES, OPS, arch_index, live_edges, parse_arch
from latlab.errors import FeatureError, NetworkReferenceError
from latlab.registry import Registry

# --------------------------------------------------------------------------- summary

#: Whole-network totals of :class:`SummaryEncoder`, in order (``layers`` = number of layers,
#: ``depth`` = compute layers on the longest path, see ``NetworkGraph.totals``).
SUMMARY_TOTALS: tuple[str, ...] = (
    "macs",
    "flops",
    "params",
    "bytes_read",
    "bytes_written",
    "weight_bytes",
    "layers",
    "depth",
)

#: The full, fixed feature list of :class:`SummaryEncoder` (27 features).
SUMMARY_FEATURES: tuple[str, ...] = (
    *SUMMARY_TOTALS,
    *(f"count_{k}" for k in KINDS),
    *(f"macs_{k}" for k in MAC_KINDS),
)

_KIND_POS = {k: i for i, k in enumerate(KINDS)}
_MAC_POS = {k: i for i, k in enumerate(MAC_KINDS)}


def summary_vector(graph: NetworkGraph) -> np.ndarray:
    """The raw (unscaled) :data:`SUMMARY_FEATURES` of one network, from ``graph.totals``.

    A graph whose totals are a sum of parts may give its row itself (``summary_row()``: a
    chain space's lazy graph, :class:`latlab.datasets.spaces.chain.ChainGraph`, sums this
    function's rows of its segments, which it may since the row is linear in the totals), so
    that serving does not build the totals of every network."""
    own = getattr(graph, "summary_row", None)
    if own is not None:
        return np.asarray(own(), dtype=np.float64)
    t = graph.totals
    row = np.zeros(len(SUMMARY_FEATURES), dtype=np.float64)
    row[:8] = (
        t.macs,
        t.flops,
        t.params,
        t.bytes_read,
        t.bytes_written,
        t.weight_bytes,
        t.n_layers,
        t.depth,
    )
    base = len(SUMMARY_TOTALS)
    for kind, n in t.op_counts.items():
        row[base + _KIND_POS[canonical_kind(kind)]] += n
    base += len(KINDS)
    for kind, m in t.op_macs.items():
        pos = _MAC_POS.get(kind)
        if pos is not None:
            row[base + pos] += m
    return row


class SummaryEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """Network summary: totals, per-kind layer counts and per-kind MACs.

    Features (:data:`SUMMARY_FEATURES`, 27 columns): ``macs, flops, params, bytes_read,
    bytes_written, weight_bytes, layers, depth``, then ``count_<kind>`` for the 14 kinds of
    :data:`latlab.encoders.base.KINDS` (kinds outside it are counted as ``other``), then
    ``macs_<kind>`` for ``conv, dwconv, fc, binconv, binfc`` (the only kinds with MACs).

    Parameters
    ----------
    log1p:
        Return ``log(1 + value)``: counts span many orders of magnitude (a 10-MAC MLP and a
        4-GMAC ResNet), which distance- and gradient-based models handle badly. Default True.
    allow_unknown:
        Networks with ops that have no cost rule (``graph.unknown_ops``) raise
        :class:`FeatureError` unless True: their MACs/FLOPs would be silently undercounted.

    Stateless (nothing is fitted); usable without ``fit``. Reads only ``graph.totals``.
    """

    def __init__(self, log1p: bool = True, allow_unknown: bool = False) -> None:
        self.log1p = log1p
        self.allow_unknown = allow_unknown

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> SummaryEncoder:
        check_graphs(graphs, type(self).__name__)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return feature_names(SUMMARY_FEATURES)

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        gs = check_graphs(graphs, type(self).__name__)
        given = batch_rows(gs, "summary")  # a chain space's batch: sums of segments
        if given is not None:
            out = np.array(given[0], dtype=np.float64)
            return np.log1p(out) if self.log1p else out
        out = np.zeros((len(gs), len(SUMMARY_FEATURES)), dtype=np.float64)
        for i, g in enumerate(gs):
            if hasattr(g, "summary_row"):  # sums of segments, none with unknown ops
                out[i] = summary_vector(g)
                continue
            if not self.allow_unknown and g.totals.unknown_ops:
                raise FeatureError(
                    f"SummaryEncoder: network {g.reference!r} has ops without cost rules "
                    f"({', '.join(g.totals.unknown_ops)}), so its MACs/FLOPs are unknown "
                    "(pass allow_unknown=True to count them as zero)"
                )
            out[i] = summary_vector(g)
        return np.log1p(out) if self.log1p else out


# --------------------------------------------------------------------------- layer widths

_MLP_KINDS = frozenset({"fc", "binfc", "act", "softmax", "norm", "data", "eltwise"})
_FC = frozenset({"fc", "binfc"})


def mlp_widths(graph: NetworkGraph, use_meta: bool = True) -> tuple[int, ...]:
    """Layer widths ``(IN, H1, ..., OUT)`` of a multilayer perceptron.

    ``IN`` is the first fully connected layer's input features, then one width per fully
    connected layer (its output features), in order. With ``use_meta`` the ``widths`` that
    FCNN-space graphs carry in ``meta`` are used directly (no layer walk). Otherwise the IR must
    be a chain (every layer one activation input, fed by the layer before it) of fully connected
    layers with activations, normalisation, data-movement and single-input element-wise layers
    between them; anything else raises :class:`FeatureError` naming the network and layer.
    """
    if use_meta and "widths" in graph.meta:
        given = tuple(int(w) for w in graph.meta["widths"])
        if len(given) < 2 or min(given) < 1:
            raise FeatureError(f"network {graph.reference!r} has invalid meta widths {given}")
        return given
    ref = graph.reference
    widths: list[int] = []
    prev_out: tuple[str, ...] = tuple(graph.inputs)
    for layer in graph.layers:
        if layer.kind not in _MLP_KINDS or len(layer.inputs) != 1:
            raise FeatureError(
                f"network {ref!r} is not a multilayer perceptron: layer {layer.name!r} "
                f"({layer.op}, kind {layer.kind}, {len(layer.inputs)} activation inputs)"
            )
        if layer.inputs[0] not in prev_out:
            raise FeatureError(
                f"network {ref!r} is not a multilayer perceptron: layer {layer.name!r} does not "
                "consume the previous layer's output (branches are not supported)"
            )
        prev_out = layer.outputs
        if layer.kind in _FC:
            _, _, c, f, *_ = layer_geometry(layer)
            if not widths:
                widths.append(c)
            elif widths[-1] != c:
                raise FeatureError(
                    f"network {ref!r}: layer {layer.name!r} takes {c} features but the previous "
                    f"fully connected layer gives {widths[-1]}"
                )
            widths.append(f)
    if not widths:
        raise FeatureError(f"network {ref!r} has no fully connected layer: no widths to encode")
    return tuple(widths)


class LayerWidthEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """The padded layer-width vector of the FCNN estimator paper.

    Row = ``(IN, H1, ..., OUT)`` of :func:`mlp_widths` followed by zeros up to
    ``max_layers + 1`` entries (``max_layers`` fully connected layers plus the input width).
    Feature names: ``width_in, width_1, ..., width_<max_layers>``.

    Parameters
    ----------
    max_layers:
        Number of fully connected layers the vector holds. ``None`` (default) fits it as the
        largest count in the training networks. A network with more layers raises
        :class:`FeatureError` naming it (the model has never seen such a depth).
    """

    _fitted_attrs = ("max_layers_",)

    def __init__(self, max_layers: int | None = None) -> None:
        self.max_layers = max_layers

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> LayerWidthEncoder:
        gs = check_graphs(graphs, type(self).__name__)
        if self.max_layers is not None:
            if int(self.max_layers) < 1:
                raise FeatureError(
                    f"LayerWidthEncoder: max_layers must be >= 1, got {self.max_layers}"
                )
            self.max_layers_ = int(self.max_layers)
            for g in gs:
                self._row(g)  # validates every training network
        else:
            if not gs:
                raise FeatureError("LayerWidthEncoder: cannot fit max_layers on no networks")
            self.max_layers_ = max(len(mlp_widths(g)) - 1 for g in gs)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        self._require_fitted()
        names = ["width_in", *(f"width_{i}" for i in range(1, self.max_layers_ + 1))]
        return feature_names(names)

    def _row(self, g: NetworkGraph) -> tuple[int, ...]:
        widths = mlp_widths(g)
        if len(widths) - 1 > self.max_layers_:
            raise FeatureError(
                f"LayerWidthEncoder: network {g.reference!r} has {len(widths) - 1} fully "
                f"connected layers, more than max_layers={self.max_layers_}"
            )
        return widths

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        self._require_fitted()
        gs = check_graphs(graphs, type(self).__name__)
        out = np.zeros((len(gs), self.max_layers_ + 1), dtype=np.float64)
        for i, g in enumerate(gs):
            widths = self._row(g)
            out[i, : len(widths)] = widths
        return out


# --------------------------------------------------------------------------- nb201 one-hot

_OP_INDEX = {op: i for i, op in enumerate(OPS)}


def nb201_ops(graph: NetworkGraph) -> tuple[str, ...]:
    """The six edge operations of an nb201 network, from ``meta["ops"]`` or ``meta["arch"]``.

    Never touches ``graph.layers`` (nb201 graphs are lazy: building 15,625 networks' layers
    would take minutes). Raises :class:`FeatureError` naming a network that is not an nb201 cell.
    """
    meta = graph.meta
    ops = meta.get("ops")
    if ops is not None:
        ops = tuple(ops)
        if len(ops) == len(EDGES) and all(op in _OP_INDEX for op in ops):
            return ops
        raise FeatureError(f"network {graph.reference!r} has invalid nb201 ops {ops!r}")
    arch = meta.get("arch")
    if arch is None and graph.reference.startswith("nb201:"):
        arch = graph.reference[len("nb201:") :]
    if arch is None:
        raise FeatureError(
            f"network {graph.reference!r} is not a NAS-Bench-201 network "
            "(no meta 'ops'/'arch'): the nb201 encoders only encode nb201 cells"
        )
    try:
        return parse_arch(str(arch))
    except NetworkReferenceError as exc:
        raise FeatureError(f"network {graph.reference!r}: {exc}") from None


def nb201_op_indices(graphs: Sequence[NetworkGraph]) -> np.ndarray:
    """``(n, 6)`` int array of op positions in :data:`OPS` for each network's six edges.

    A network whose ``meta["ops"]`` is one of the space's 15,625 op tuples is a dictionary
    look-up (this runs for every network a NAS loop scores, twice per feature set); anything
    else goes through :func:`nb201_ops`, which validates and names the culprit.
    """
    known = _op_indices_of_space()
    rows = []
    for g in graphs:
        ops = g.meta.get("ops")
        idx = known.get(ops) if isinstance(ops, tuple) else None
        if idx is None:
            idx = tuple(_OP_INDEX[op] for op in nb201_ops(g))
        rows.append(idx)
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(EDGES))


@lru_cache(maxsize=1)
def _op_indices_of_space() -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every valid six-op tuple of the space -> its op positions (built once, milliseconds)."""
    return {ops: tuple(_OP_INDEX[op] for op in ops) for ops in arch_index().values()}


#: Feature names of :class:`Nb201OneHotEncoder`: ``"<dst><-<src>=<op>"``, edge-major.
NB201_ONEHOT_FEATURES: tuple[str, ...] = tuple(
    f"{dst}<-{src}={op}" for dst, src in EDGES for op in OPS
)


class Nb201OneHotEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """One-hot of the NAS-Bench-201 cell: 6 edges x 5 operations = 30 binary features.

    Column ``5·e + j`` is 1 when edge ``e`` (arch-string order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
    3<-2) has operation ``OPS[j]`` (none, skip_connect, nor_conv_1x1, nor_conv_3x3,
    avg_pool_3x3). Reads ``meta["ops"]``/``meta["arch"]`` only. Stateless; usable without fit.
    """

    def __init__(self) -> None:
        pass

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> Nb201OneHotEncoder:
        check_graphs(graphs, type(self).__name__)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return feature_names(NB201_ONEHOT_FEATURES)

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        gs = check_graphs(graphs, type(self).__name__)
        idx = nb201_op_indices(gs)
        out = np.zeros((len(gs), len(EDGES) * len(OPS)), dtype=np.float64)
        cols = idx + np.arange(len(EDGES)) * len(OPS)
        out[np.arange(len(gs))[:, None], cols] = 1.0
        return out


# --------------------------------------------------------------------------- nb201 op counts


#: Feature names of :class:`Nb201OpCountEncoder`.
NB201_COUNT_FEATURES: tuple[str, ...] = (
    *(f"count={op}" for op in OPS),
    *(f"live_count={op}" for op in OPS),
)


class Nb201OpCountEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """How many of the cell's six edges carry each operation: all edges, and live edges only.

    10 features: ``count=<op>`` for the five :data:`OPS` over the six edges, then
    ``live_count=<op>`` over the edges on an input-output path
    (:func:`~latlab.encoders.nb201_cell.live_edges`).
    The one-hot says *where* each op sits; these sums say *how much* of each a cell executes
    (every cell runs its ops whether or not they reach the output, unless a graph optimiser
    removes dead ones), which tree models cannot add up from one-hot columns on their own.
    Reads ``meta["ops"]``/``meta["arch"]`` only. Stateless; usable without fit.

    ``part`` keeps one half: ``"edges"`` (``count=``: what a runtime that executes every op
    runs) or ``"live"`` (``live_count=``: what one that prunes dead ops runs); few-shot
    transfer fits an additive cost model on each (:mod:`latlab.predictors.additive`), where
    ten networks cannot support all ten columns at once.
    """

    def __init__(self, part: str = "all") -> None:
        self.part = part

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> Nb201OpCountEncoder:
        check_graphs(graphs, type(self).__name__)
        return self

    def _columns(self) -> slice:
        parts = {"all": slice(0, 2 * len(OPS)), "edges": slice(0, len(OPS)),
                 "live": slice(len(OPS), 2 * len(OPS))}  # fmt: skip
        if self.part not in parts:
            raise FeatureError(
                f"unknown nb201 count part {self.part!r} (known: {', '.join(parts)})"
            )
        return parts[self.part]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return feature_names(NB201_COUNT_FEATURES[self._columns()])

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        return self._all_counts(graphs)[:, self._columns()]

    def _all_counts(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        gs = check_graphs(graphs, type(self).__name__)
        idx = nb201_op_indices(gs)  # (n, 6)
        onehot = np.zeros((len(gs), len(EDGES), len(OPS)), dtype=np.float64)
        np.put_along_axis(onehot, idx[:, :, None], 1.0, axis=2)
        # Liveness depends only on which edges are "none": one of 2^6 patterns.
        pattern = ((idx == _NONE_INDEX) << np.arange(len(EDGES))).sum(axis=1)
        live = _LIVE_BY_NONE_PATTERN[pattern]  # (n, 6) bool
        return np.concatenate([onehot.sum(axis=1), (onehot * live[:, :, None]).sum(axis=1)], axis=1)


_NONE_INDEX = OPS.index("none")
_LIVE_BY_NONE_PATTERN = np.array(
    [
        live_edges(["none" if p >> e & 1 else "skip_connect" for e in range(len(EDGES))])
        for p in range(1 << len(EDGES))
    ],
    dtype=bool,
)


# --------------------------------------------------------------------------- by name

#: Vector encoders by the names configs and bundles use (name -> class or factory; a search
#: space's own encoders are registered when the space loads,
#: :attr:`latlab.datasets.spaces.base.SearchSpace.vector_encoders`; plug-ins: the
#: ``latlab.vector_encoders`` entry points).
VECTOR_ENCODERS: Registry[Any] = Registry(
    "vector encoder",
    group="latlab.vector_encoders",
    check=callable,
    entries={
        "summary": SummaryEncoder,
        "widths": LayerWidthEncoder,
        "nb201-onehot": Nb201OneHotEncoder,
        "nb201-counts": Nb201OpCountEncoder,
        # Raw (not log) totals and per-kind counts and MACs: columns a latency adds up over.
        "summary-linear": lambda: SummaryEncoder(log1p=False),
        "nb201-edge-counts": lambda: Nb201OpCountEncoder(part="edges"),
        "nb201-live-counts": lambda: Nb201OpCountEncoder(part="live"),
    },
)


def register_vector_encoder(name: str, factory: Any) -> None:
    """Make ``name`` usable in encoder specs (a factory, or ``"module:attr"`` naming one)."""
    VECTOR_ENCODERS.register(name, factory)


def make_vector_encoder(spec: str | Sequence[str], **params: dict[str, Any]) -> Any:
    """An encoder from names: ``"summary"``, ``"summary+nb201-onehot"``, ``["widths"]``.

    Several names give a :class:`sklearn.pipeline.FeatureUnion` (``make_union``) whose columns
    are the encoders' in the given order. ``params`` maps a name to its constructor arguments,
    e.g. ``make_vector_encoder("summary", summary={"log1p": False})``.
    """
    from sklearn.pipeline import make_union

    names = spec.split("+") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise FeatureError("an encoder spec needs at least one encoder name")
    encoders = []
    for n in names:
        cls = VECTOR_ENCODERS.get(n)
        if cls is None:
            raise FeatureError(
                f"unknown vector encoder {n!r}; known: {', '.join(sorted(VECTOR_ENCODERS))}"
            )
        encoders.append(cls(**params.get(n, {})))
    return encoders[0] if len(encoders) == 1 else make_union(*encoders)
