"""Graph encoders: networks as torch-geometric ``Data`` for graph neural network predictors.

Two encoders share one output convention, so that one GCN works on both:

* :class:`GraphEncoder` -- any :class:`NetworkGraph` (from ONNX, the zoo, a space): one node
  per layer (plus one per graph input, plus an optional global node), node features = role and
  kind/op one-hot + standardised log-scaled numeric attributes, edges = data flow.
* :class:`Nb201CellGraphEncoder` -- the NAS-Bench-201 cell as BRP-NAS (Dudziak et al.,
  NeurIPS 2020; code: SamsungLabs/eagle) encodes it: operations on nodes (input, six op nodes,
  output) plus a global node; reads only ``meta["arch"]/["ops"]`` and ``totals``.

Output convention (every ``Data``):

* ``x`` -- float32 ``(num_nodes, num_node_features)``; with a global node it is node 0 (as in
  BRP-NAS) and ``global_index = tensor([0])``. Because the attribute name contains ``index``,
  ``Batch.from_data_list`` offsets it, so ``batch.global_index`` are the global nodes of a batch
  -- the readout of BRP-NAS's GCN is ``h[batch.global_index]``.
* ``edge_index`` -- int64 ``(2, E)`` in torch-geometric's convention: messages go from
  ``edge_index[0]`` to ``edge_index[1]``. ``direction`` says how data flow maps onto that:
  ``"forward"`` (producer -> consumer), ``"reverse"`` (consumer -> producer) or ``"both"``.
  The global node is wired by ``global_edges``: ``"in"`` (every node -> global), ``"out"`` or
  ``"both"``. ``self_loops`` adds ``(i, i)`` for every node.
* ``graph_features`` -- float32 ``(1, 27)``: the :data:`SUMMARY_FEATURES` of the network,
  log1p then standardised with statistics fitted on the training networks (when enabled), for
  concatenation at the readout. ``network`` -- the reference string.

The defaults reproduce BRP-NAS's propagation. Its GCN computes ``A·X·W`` with ``A[i, j] = 1``
for a data-flow edge ``i -> j``, the identity added, and a global row of ones -- so node ``i``
aggregates its *successors* and itself, and the global node aggregates every node. In
torch-geometric terms that is ``direction="reverse"``, ``global_edges="in"``,
``self_loops=True`` with an un-normalised convolution (``GCNConv(normalize=False)``); with
the default normalised ``GCNConv`` the self-loops present are not duplicated.

For inference only (latlab's own GCN inference and the serving cache), ``transform_light``
gives the same tensors as :class:`EncodedGraph` items, without building one torch-geometric
``Data`` per network -- whose per-attribute bookkeeping cost more than encoding the cell.

Fitted state (numeric means/stds, the op vocabulary, summary means/stds) exports as plain JSON
with ``to_state()`` and loads with ``from_state()``/:func:`latlab.encoders.base.encoder_from_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latlab.encoders.base import KINDS, EncoderStateMixin, check_graphs, feature_names
from latlab.encoders.ir import Layer, NetworkGraph, numel
from latlab.encoders.layer_features import layer_geometry
from latlab.encoders.nb201_cell import EDGES, OPS
from latlab.encoders.vector import SUMMARY_FEATURES, nb201_op_indices, summary_vector
from latlab.errors import FeatureError
from latlab.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch_geometric.data import Data


class EncodedGraph(NamedTuple):
    """One encoded network for inference: the tensors of its ``Data`` (same names, same
    convention), as a plain record (a named tuple: the cheapest Python record to create, which
    matters at 15,625 per call). The tensors may be views of a batch's arrays shared with
    other items: read them, never modify them in place."""

    x: torch.Tensor
    edge_index: torch.Tensor
    num_nodes: int
    global_index: torch.Tensor | None
    graph_features: torch.Tensor | None
    network: str


_DIRECTIONS = ("forward", "reverse", "both")
#: How a global node is wired: edges into it, out of it, or both (graph encoders share it).
GLOBAL_EDGES = ("in", "out", "both")
_ONE_HOT = ("kind", "op", "both")

#: Numeric node attributes of :class:`GraphEncoder` (log1p, then standardised). Geometry and
#: counts are those of :mod:`latlab.encoders.layer_features`; ``fan_in`` is the number of
#: activation inputs, ``n`` the batch.
NODE_NUMERIC: tuple[str, ...] = (
    "h",
    "w",
    "c",
    "f",
    "k_h",
    "k_w",
    "stride",
    "groups",
    "num_ops",
    "num_inputs",
    "num_outputs",
    "num_weights",
    "macs",
    "fan_in",
    "n",
    "weight_bits",
    "act_bits",
)

#: Node roles (always the first columns of ``x``).
ROLES: tuple[str, ...] = ("input", "global")
UNKNOWN_OP = "<unk>"
_STD_FLOOR = 1e-8


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise :class:`FeatureError` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise FeatureError(f"{name} must be one of {allowed}, got {value!r}")


def _layer_numeric(layer: Layer) -> list[float]:
    h, w, c, f, k_h, k_w, stride = layer_geometry(layer)
    y = layer.output_shapes[0] if layer.output_shapes else ()
    return [
        h,
        w,
        c,
        f,
        k_h,
        k_w,
        stride,
        int(layer.attrs.get("groups", 1)),
        layer.flops,
        sum(numel(s) for s in layer.input_shapes),
        sum(numel(s) for s in layer.output_shapes),
        sum(numel(s) for s in layer.weight_shapes),
        layer.macs,
        len(layer.inputs),
        y[0] if y else 1,
        layer.weight_bits,
        layer.act_bits,
    ]


def _input_numeric(shape: tuple[int, ...]) -> list[float]:
    r = len(shape)
    if r <= 2:
        h = w = 1
    elif r == 3:
        h, w = shape[2], 1
    else:
        h, w = numel(shape[2:-1]), shape[-1]
    c = shape[1] if r >= 2 else (shape[0] if r == 1 else 1)
    return [h, w, c, c, 1, 1, 1, 1, 0, 0, numel(shape), 0, 0, 0, shape[0] if r else 1, 0, 32]


def wire_edges(
    flow: np.ndarray,
    n_nodes: int,
    global_at: int | None,
    direction: str,
    global_edges: str,
    self_loops: bool,
) -> np.ndarray:
    """``(2, E)`` edges from data-flow pairs ``flow`` (``(k, 2)``, producer, consumer)."""
    parts = []
    if len(flow):
        if direction in ("forward", "both"):
            parts.append(flow)
        if direction in ("reverse", "both"):
            parts.append(flow[:, ::-1])
    if global_at is not None:
        others = np.array([i for i in range(n_nodes) if i != global_at], dtype=np.int64)
        g = np.full_like(others, global_at)
        if global_edges in ("in", "both"):
            parts.append(np.stack([others, g], axis=1))
        if global_edges in ("out", "both"):
            parts.append(np.stack([g, others], axis=1))
    if self_loops:
        ar = np.arange(n_nodes, dtype=np.int64)
        parts.append(np.stack([ar, ar], axis=1))
    if not parts:
        return np.zeros((2, 0), dtype=np.int64)
    pairs = np.unique(np.concatenate(parts).astype(np.int64), axis=0)
    return np.ascontiguousarray(pairs.T)


class _GraphFeatureScaler:
    """Standardisation of log1p summary vectors (shared by both graph encoders)."""

    @staticmethod
    def raw(graphs: Sequence[NetworkGraph], allow_unknown: bool, encoder: str) -> np.ndarray:
        out = np.zeros((len(graphs), len(SUMMARY_FEATURES)))
        for i, g in enumerate(graphs):
            if not allow_unknown and g.totals.unknown_ops:
                raise FeatureError(
                    f"{encoder}: network {g.reference!r} has ops without cost rules "
                    f"({', '.join(g.totals.unknown_ops)}) (pass allow_unknown=True to accept)"
                )
            out[i] = summary_vector(g)
        return np.log1p(out)

    @staticmethod
    def fit(raw: np.ndarray) -> tuple[list[float], list[float]]:
        if not len(raw):
            raise FeatureError("cannot fit graph-feature statistics on no networks")
        mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        std[std < _STD_FLOOR] = 1.0
        return mean.tolist(), std.tolist()


class GraphEncoder(  # type: ignore[call-arg]  # TransformerMixin takes it
    EncoderStateMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """torch-geometric ``Data`` of any network: layers as nodes, data flow as edges.

    Nodes, in order: the global node (if ``global_node``), one node per graph input (if
    ``input_nodes``; role ``input``, numeric attributes of the input tensor), one node per layer
    in the IR's topological order. Node features ``x`` (see :meth:`get_feature_names_out`):

    1. role one-hot ``(input, global)``;
    2. if ``one_hot`` is ``"kind"`` or ``"both"``: one-hot over the 14 :data:`KINDS`;
    3. if ``one_hot`` is ``"op"`` or ``"both"``: one-hot over the op types seen in ``fit``
       (sorted) plus ``<unk>`` for ops first seen later;
    4. :data:`NODE_NUMERIC` (17 values) as ``(log1p(v) - mean) / std``, mean/std fitted over the
       training networks' non-global nodes. The global node's numeric part is 0.

    Edges and ``graph_features``: see the module docstring (defaults reproduce BRP-NAS).

    Parameters
    ----------
    global_node, input_nodes, one_hot, direction, global_edges, self_loops:
        Structure of the graph, as above.
    graph_features:
        Attach ``graph_features`` (``(1, 27)`` standardised log1p summary) to every ``Data``.
    allow_unknown:
        Networks with ops without a cost rule raise :class:`FeatureError` unless True.
    """

    def __init__(
        self,
        global_node: bool = True,
        input_nodes: bool = True,
        one_hot: str = "both",
        direction: str = "reverse",
        global_edges: str = "in",
        self_loops: bool = True,
        graph_features: bool = True,
        allow_unknown: bool = False,
    ) -> None:
        self.global_node = global_node
        self.input_nodes = input_nodes
        self.one_hot = one_hot
        self.direction = direction
        self.global_edges = global_edges
        self.self_loops = self_loops
        self.graph_features = graph_features
        self.allow_unknown = allow_unknown

    def _fitted_names(self) -> tuple[str, ...]:
        names = ("op_vocab_", "node_mean_", "node_std_")
        return (*names, "graph_mean_", "graph_std_") if self.graph_features else names

    def _validate(self) -> None:
        check_choice("one_hot", self.one_hot, _ONE_HOT)
        check_choice("direction", self.direction, _DIRECTIONS)
        check_choice("global_edges", self.global_edges, GLOBAL_EDGES)

    def _check(self, g: NetworkGraph) -> None:
        if not self.allow_unknown and g.unknown_ops:
            raise FeatureError(
                f"GraphEncoder: network {g.reference!r} has ops without cost rules "
                f"({', '.join(g.unknown_ops)}), so their node counts are unknown "
                "(pass allow_unknown=True to encode them as zero-cost '<unk>' nodes)"
            )
        if not g.layers:
            raise FeatureError(f"GraphEncoder: network {g.reference!r} has no layers")

    def _raw_numeric(self, g: NetworkGraph) -> np.ndarray:
        rows = [_input_numeric(s) for s in g.inputs.values()] if self.input_nodes else []
        rows += [_layer_numeric(layer) for layer in g.layers]
        return np.log1p(np.asarray(rows, dtype=np.float64))

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> GraphEncoder:
        self._validate()
        gs = check_graphs(graphs, type(self).__name__)
        if not gs:
            raise FeatureError("GraphEncoder: cannot fit on no networks")
        ops: set[str] = set()
        blocks = []
        for g in gs:
            self._check(g)
            ops.update(layer.op for layer in g.layers)
            blocks.append(self._raw_numeric(g))
        stacked = np.concatenate(blocks)
        std = stacked.std(axis=0)
        std[std < _STD_FLOOR] = 1.0
        self.op_vocab_ = sorted(ops)
        self.node_mean_ = stacked.mean(axis=0).tolist()
        self.node_std_ = std.tolist()
        if self.graph_features:
            raw = _GraphFeatureScaler.raw(gs, self.allow_unknown, "GraphEncoder")
            self.graph_mean_, self.graph_std_ = _GraphFeatureScaler.fit(raw)
        return self

    def _op_columns(self) -> list[str]:
        return [*self.op_vocab_, UNKNOWN_OP] if self.one_hot in ("op", "both") else []

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the columns of ``x``."""
        self._require_fitted()
        kinds = [f"kind={k}" for k in KINDS] if self.one_hot in ("kind", "both") else []
        ops = [f"op={o}" for o in self._op_columns()]
        roles = [f"role={r}" for r in ROLES]
        return feature_names([*roles, *kinds, *ops, *NODE_NUMERIC])

    @property
    def num_node_features(self) -> int:
        return len(self.get_feature_names_out())

    @property
    def num_graph_features(self) -> int:
        return len(SUMMARY_FEATURES) if self.graph_features else 0

    def transform(self, graphs: Sequence[NetworkGraph]) -> list[Data]:
        import torch
        from torch_geometric.data import Data

        self._require_fitted()
        self._validate()
        gs = check_graphs(graphs, type(self).__name__)
        kind_cols = {k: i for i, k in enumerate(KINDS)} if self.one_hot in ("kind", "both") else {}
        op_names = self._op_columns()
        op_cols = {o: i for i, o in enumerate(op_names)}
        n_roles, n_kind, n_op = len(ROLES), len(kind_cols), len(op_names)
        num0 = n_roles + n_kind + n_op
        width = num0 + len(NODE_NUMERIC)
        mean = np.asarray(self.node_mean_)
        std = np.asarray(self.node_std_)
        gfeat = None
        if self.graph_features:
            raw = _GraphFeatureScaler.raw(gs, self.allow_unknown, "GraphEncoder")
            gfeat = (raw - np.asarray(self.graph_mean_)) / np.asarray(self.graph_std_)
        out = []
        for gi, g in enumerate(gs):
            self._check(g)
            off = 1 if self.global_node else 0
            n_in = len(g.inputs) if self.input_nodes else 0
            n_nodes = off + n_in + len(g.layers)
            x = np.zeros((n_nodes, width), dtype=np.float32)
            x[off:, num0:] = (self._raw_numeric(g) - mean) / std
            if self.global_node:
                x[0, 1] = 1.0
            x[off : off + n_in, 0] = 1.0
            base = off + n_in
            for li, layer in enumerate(g.layers):
                row = base + li
                if kind_cols:
                    x[row, n_roles + kind_cols.get(layer.kind, kind_cols["other"])] = 1.0
                if op_cols:
                    col = op_cols.get(layer.op, op_cols[UNKNOWN_OP])
                    x[row, n_roles + n_kind + col] = 1.0
            flow = [(base + p, base + c) for p, c in g.edges()]
            if self.input_nodes:
                in_pos = {t: off + k for k, t in enumerate(g.inputs)}
                for li, layer in enumerate(g.layers):
                    flow += [(in_pos[t], base + li) for t in layer.inputs if t in in_pos]
            edges = wire_edges(
                np.asarray(flow, dtype=np.int64).reshape(-1, 2),
                n_nodes,
                0 if self.global_node else None,
                self.direction,
                self.global_edges,
                self.self_loops,
            )
            data = Data(
                x=torch.from_numpy(x),
                edge_index=torch.from_numpy(edges),
                num_nodes=n_nodes,
                network=g.reference,
            )
            if self.global_node:
                data.global_index = torch.tensor([0], dtype=torch.long)
            if gfeat is not None:
                data.graph_features = torch.from_numpy(gfeat[gi : gi + 1].astype(np.float32))
            out.append(data)
        return out

    def transform_light(self, graphs: Sequence[NetworkGraph]) -> list[EncodedGraph]:
        """:meth:`transform` as :class:`EncodedGraph` items (the interface GCN inference reads;
        here the per-layer encoding dominates, so the ``Data`` objects are simply unwrapped)."""
        return [
            EncodedGraph(
                d.x,
                d.edge_index,
                int(d.num_nodes),
                getattr(d, "global_index", None),
                getattr(d, "graph_features", None),
                d.network,
            )
            for d in self.transform(graphs)
        ]


# --------------------------------------------------------------------------- nb201 cell

#: Cell nodes: 0 = input (cell node 0), 1..6 = the six edge ops in arch order, 7 = output
#: (cell node 3). Data-flow edges between them: op ``e`` (target t, source s) reads the sum
#: node s (the input, or the ops whose target is s) and feeds node t's consumers.
_N_CELL = len(EDGES) + 2


def _cell_flow() -> np.ndarray:
    a = np.zeros((_N_CELL, _N_CELL), dtype=bool)
    for e, (dst, src) in enumerate(EDGES):
        op_node = e + 1
        if src == 0:
            a[0, op_node] = True
        else:
            for e2, (dst2, _) in enumerate(EDGES):
                if dst2 == src:
                    a[e2 + 1, op_node] = True
        if dst == 3:
            a[op_node, _N_CELL - 1] = True
    return a


_CELL_FLOW = _cell_flow()
_NONE, _SKIP = OPS.index("none"), OPS.index("skip_connect")


@cache
def _brp_cell(pattern: tuple[int, ...]) -> tuple[np.ndarray, tuple[bool, ...]]:
    """BRP-NAS's pruned cell for an op pattern (0 none, 1 skip, 2 other per edge).

    Returns the data-flow adjacency (8x8 bool; pruned nodes keep their place with no edges, as
    BRP-NAS's ``keep_dims``) and which op nodes keep their op label. As in BRP-NAS: a ``none``
    op node loses all its edges; a ``skip_connect`` op node is bypassed (each predecessor is
    wired to each successor) and removed; then every node not on a path from input to output
    is removed. Ops are processed in edge order, so chains of skips collapse.
    """
    a = _CELL_FLOW.copy()
    labelled = [False] * _N_CELL
    for e, kind in enumerate(pattern):
        v = e + 1
        if kind == 0:
            a[v, :] = False
            a[:, v] = False
        elif kind == 1:
            preds = np.flatnonzero(a[:, v])
            succs = np.flatnonzero(a[v, :])
            if len(preds) and len(succs):
                for p in preds:
                    a[p, succs] = True
                    a[p, v] = False
                a[v, succs] = False
        else:
            labelled[v] = True
    fw = _reach(a, 0)
    bw = _reach(a.T, _N_CELL - 1)
    keep = fw & bw
    a[~keep, :] = False
    a[:, ~keep] = False
    labels = tuple(bool(labelled[v] and keep[v]) for v in range(_N_CELL))
    return a, labels


def _reach(a: np.ndarray, start: int) -> np.ndarray:
    seen = np.zeros(len(a), dtype=bool)
    seen[start] = True
    stack = [start]
    while stack:
        v = stack.pop()
        for u in np.flatnonzero(a[v] & ~seen):
            seen[u] = True
            stack.append(int(u))
    return seen


class Nb201CellGraphEncoder(  # type: ignore[call-arg]  # TransformerMixin takes it
    EncoderStateMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """The NAS-Bench-201 cell graph of BRP-NAS, as torch-geometric ``Data``.

    Nodes (9 with the global node, 8 without): ``[global], input, op1..op6, output`` -- the
    cell's six edges become nodes in arch-string order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

    With ``prune=True`` (BRP-NAS): ``none`` ops are removed, ``skip_connect`` ops are replaced
    by direct edges, and nodes off every input-output path are cut off; removed nodes keep their
    place as featureless, edge-less nodes (BRP-NAS's ``keep_dims``), so every graph has the same
    size. Node features (6): ``nor_conv_1x1, nor_conv_3x3, avg_pool_3x3, input, output,
    global`` -- BRP-NAS's exact encoding (input and output are flagged even when the cell is
    disconnected). With ``prune=False``: the fixed cell graph, features (8) ``none,
    skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3, input, output, global``. Without a
    global node the ``global`` column is dropped.

    Edges follow ``direction``/``global_edges``/``self_loops`` (module docstring); BRP-NAS's
    global row connects the global node to all eight cell nodes, pruned ones included.

    ``graph_features=True`` attaches the network's standardised log1p summary (from
    ``graph.totals``; statistics fitted on the training networks); otherwise the encoder is
    stateless and usable without ``fit``. Never touches ``graph.layers``.
    """

    def __init__(
        self,
        global_node: bool = True,
        prune: bool = True,
        direction: str = "reverse",
        global_edges: str = "in",
        self_loops: bool = True,
        graph_features: bool = False,
        allow_unknown: bool = False,
    ) -> None:
        self.global_node = global_node
        self.prune = prune
        self.direction = direction
        self.global_edges = global_edges
        self.self_loops = self_loops
        self.graph_features = graph_features
        self.allow_unknown = allow_unknown

    def _fitted_names(self) -> tuple[str, ...]:
        return ("graph_mean_", "graph_std_") if self.graph_features else ()

    def _validate(self) -> None:
        check_choice("direction", self.direction, _DIRECTIONS)
        check_choice("global_edges", self.global_edges, GLOBAL_EDGES)

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> Nb201CellGraphEncoder:
        self._validate()
        gs = check_graphs(graphs, type(self).__name__)
        nb201_op_indices(gs)  # every training network must be an nb201 cell
        if self.graph_features:
            raw = _GraphFeatureScaler.raw(gs, self.allow_unknown, type(self).__name__)
            self.graph_mean_, self.graph_std_ = _GraphFeatureScaler.fit(raw)
        return self

    def _op_feature_names(self) -> list[str]:
        return list(OPS[2:]) if self.prune else list(OPS)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the columns of ``x``."""
        names = [*self._op_feature_names(), "input", "output"]
        return feature_names([*names, "global"] if self.global_node else names)

    @property
    def num_node_features(self) -> int:
        return len(self.get_feature_names_out())

    @property
    def num_graph_features(self) -> int:
        return len(SUMMARY_FEATURES) if self.graph_features else 0

    def _edges(self, adjacency: np.ndarray) -> np.ndarray:
        off = 1 if self.global_node else 0
        flow = np.argwhere(adjacency).astype(np.int64) + off
        return wire_edges(
            flow,
            _N_CELL + off,
            0 if self.global_node else None,
            self.direction,
            self.global_edges,
            self.self_loops,
        )

    def transform(self, graphs: Sequence[NetworkGraph]) -> list[Data]:
        return light_to_data(self.transform_light(graphs))

    def transform_light(self, graphs: Sequence[NetworkGraph]) -> list[EncodedGraph]:
        """The tensors of :meth:`transform` as :class:`EncodedGraph` items (for inference)."""
        import torch

        self._require_fitted()
        self._validate()
        gs = check_graphs(graphs, type(self).__name__)
        idx = nb201_op_indices(gs)  # (n, 6)
        n = len(gs)
        off = 1 if self.global_node else 0
        n_nodes = _N_CELL + off
        n_op_feats = len(self._op_feature_names())
        width = len(self.get_feature_names_out())
        x = np.zeros((n, n_nodes, width), dtype=np.float32)
        x[:, off, n_op_feats] = 1.0  # input
        x[:, off + _N_CELL - 1, n_op_feats + 1] = 1.0  # output
        if self.global_node:
            x[:, 0, n_op_feats + 2] = 1.0
        if self.prune:
            # Edges and kept nodes depend only on each edge being none / skip / other: one of
            # 3^6 patterns, computed once per distinct pattern and shared by its networks.
            pats, which = np.unique(np.minimum(idx, 2), axis=0, return_inverse=True)
            cells = [_brp_cell(tuple(p.tolist())) for p in pats]
            edges = [torch.from_numpy(self._edges(adjacency)) for adjacency, _ in cells]
            keep = np.array([labels[1 : 1 + len(EDGES)] for _, labels in cells], dtype=bool)
            ri, ei = np.nonzero(keep[which.reshape(-1)])  # kept op nodes: conv/pool (index >= 2)
            x[ri, off + 1 + ei, idx[ri, ei] - 2] = 1.0
            edge_of = [edges[j] for j in which.reshape(-1).tolist()]
        else:
            edge_of = [torch.from_numpy(self._edges(_CELL_FLOW))] * n
            x[np.arange(n)[:, None], off + 1 + np.arange(len(EDGES))[None, :], idx] = 1.0
        gfeat = None
        if self.graph_features:
            raw = _GraphFeatureScaler.raw(gs, self.allow_unknown, type(self).__name__)
            gfeat = (raw - np.asarray(self.graph_mean_)) / np.asarray(self.graph_std_)
            gfeat = torch.from_numpy(gfeat.astype(np.float32))
        xt = torch.from_numpy(x)
        glob = torch.tensor([0], dtype=torch.long) if self.global_node else None
        return [
            EncodedGraph(
                xt[i],
                edge_of[i],
                n_nodes,
                glob,
                None if gfeat is None else gfeat[i : i + 1],
                g.reference,
            )
            for i, g in enumerate(gs)
        ]


def brp_adjacency(ops: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """BRP-NAS's dense ``(adjacency, features)`` of a cell, global node first (9x9, 9x6).

    The matrix form of :class:`Nb201CellGraphEncoder`'s default output: ``adjacency[i, j] = 1``
    for data flow ``i -> j`` plus the identity and the global row; for cross-checks and for
    dense-matrix GCNs.
    """
    op_idx = [OPS.index(op) for op in ops]
    a, labels = _brp_cell(tuple(min(i, 2) for i in op_idx))
    n = _N_CELL + 1
    adj = np.zeros((n, n), dtype=np.float64)
    adj[1:, 1:] = a
    adj[0, 1:] = 1.0
    np.fill_diagonal(adj, 1.0)
    feats = np.zeros((n, 6), dtype=np.float64)
    feats[0, 5] = 1.0
    feats[1, 3] = 1.0
    feats[-1, 4] = 1.0
    for e, i in enumerate(op_idx):
        if labels[e + 1]:
            feats[e + 2, i - 2] = 1.0
    return adj, feats


# --------------------------------------------------------------------------- by name

#: Graph encoders by the names the GCN's ``graph=`` takes: name -> factory taking
#: ``graph_features``. A search space's own are registered when the space loads
#: (:attr:`latlab.datasets.spaces.base.SearchSpace.graph_encoders`); plug-ins: the
#: ``latlab.graph_encoders`` entry points.
GRAPH_ENCODERS: Registry[Any] = Registry(
    "graph encoder",
    group="latlab.graph_encoders",
    check=callable,
    entries={
        "generic": lambda graph_features: GraphEncoder(graph_features=graph_features),
        "nb201-cell": lambda graph_features: Nb201CellGraphEncoder(
            prune=False, graph_features=graph_features
        ),
        "nb201-brp": lambda graph_features: Nb201CellGraphEncoder(
            prune=True, graph_features=graph_features
        ),
    },
)


def register_graph_encoder(name: str, factory: Any) -> None:
    """Make ``graph=name`` build ``factory(graph_features)`` (or ``"module:attr"`` naming it)."""
    GRAPH_ENCODERS.register(name, factory)


def make_graph_encoder(name: str, graph_features: bool) -> Any:
    """The graph encoder registered as ``name``; raises naming it and the known ones."""
    factory = GRAPH_ENCODERS.get(name)
    if factory is None:
        raise FeatureError(
            f"unknown graph encoder {name!r}; known: {', '.join(sorted(GRAPH_ENCODERS))}"
        )
    return factory(bool(graph_features))


def light_to_data(items: Sequence[EncodedGraph]) -> list[Data]:
    """torch-geometric ``Data`` objects (for training) from :class:`EncodedGraph` items: the
    one conversion every encoder with a ``transform_light`` fast path shares."""
    from torch_geometric.data import Data

    out = []
    for item in items:
        data = Data(
            x=item.x.clone(),
            edge_index=item.edge_index.clone(),
            num_nodes=item.num_nodes,
            network=item.network,
        )
        if item.global_index is not None:
            data.global_index = item.global_index.clone()
        if item.graph_features is not None:
            data.graph_features = item.graph_features.clone()
        out.append(data)
    return out
