"""NAS-Bench-201: ``nb201:ARCH`` references and the space of all 15,625 cells.

The network is the standard NAS-Bench-201 CIFAR network (Dong & Yang, ICLR 2020; the
``TinyNetwork``/``InferCell``/``ResNetBasicblock`` modules of AutoDL-Projects):

* stem: Conv 3x3 (16 channels, no bias) + BN;
* three stages of 5 cells at 16, 32 and 64 channels, joined by NAS-Bench-201's residual
  reduction block: ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus a shortcut
  AvgPool 2x2 (stride 2) + Conv 1x1, summed;
* BN-ReLU, global average pooling, a linear classifier (10 classes); input 3x32x32.

Cell edges: ``nor_conv_kxk`` = ReLU-Conv(k, same padding, no bias)-BN; ``avg_pool_3x3`` =
AvgPool 3x3 stride 1 pad 1 (``count_include_pad=False``); ``skip_connect`` = the tensor
itself (no layer); ``none`` = zero. A node sums its incoming edges with ``Add`` layers.

**How ``none`` is represented.** NAS-Bench-201's ``Zero`` op multiplies its input by 0, and
the sum then adds a tensor of zeros: computation that cannot change the output. The IR keeps
only computation that can reach the output, as a graph optimiser would:

* ``none`` edges are dropped;
* a node with no live incoming edge is zero, so edges leaving it are dropped too;
* edges into a node whose value never reaches the cell output are dropped (dead code);
* a cell whose output is zero (no live path from its input to node 3) becomes one
  ``Mul`` of the cell input by the constant 0 -- a real zero tensor of the right shape, so the
  following cells still compute on a tensor, exactly as in NAS-Bench-201.

Archs that differ only in dead edges therefore build the same graph and share a digest
(:func:`canonical_ops`). References resolve to a :class:`LazyNetworkGraph`: its ``totals``
come from an additive per-edge cost table (computed once per input shape from IR built by
:class:`NetBuilder`) and its ``digest`` from the canonical arch, so that the whole space is
summarised in well under a second; the layers are built only when something walks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from threading import Lock
from typing import Any

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import Genotype, SearchSpace
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import COUNT_FIELDS, LazyNetworkGraph, NetworkGraph, NetworkTotals
from latlab.encoders.nb201_cell import (
    EDGES,
    OPS,
    all_archs,
    arch_index,
    format_arch,
    live_edges,
    parse_arch,
)
from latlab.errors import NetworkReferenceError

#: Channels of the three stages, cells per stage, classes, and the CIFAR input (C, H, W).
STAGE_CHANNELS: tuple[int, ...] = (16, 32, 64)
CELLS_PER_STAGE = 5
NUM_CLASSES = 10
INPUT_CHW: tuple[int, int, int] = (3, 32, 32)
#: Number of networks in the space.
SPACE_SIZE = len(OPS) ** len(EDGES)


# --------------------------------------------------------------------------- cell semantics


def canonical_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """The ops with every dead edge replaced by ``none``: archs with equal canonical ops build
    the same graph."""
    return tuple(op if alive else "none" for op, alive in zip(ops, live_edges(ops), strict=True))


def _edge(b: NetBuilder, x: str, op: str) -> str:
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return b.avgpool(x, 3, 1, padding=1, count_include_pad=False)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        k = 1 if op == "nor_conv_1x1" else 3
        return b.bn(b.conv(b.relu(x), b.shape(x)[1], k))
    raise ValueError(f"edge op {op!r} has no layers")  # 'none' edges are never built


def _cell(b: NetBuilder, x: str, ops: Sequence[str]) -> str:
    live = live_edges(ops)
    nodes: list[str | None] = [x, None, None, None]
    for dst in range(1, 4):
        terms = []
        for k, (d, src) in enumerate(EDGES):
            if d == dst and live[k]:
                source = nodes[src]
                assert source is not None  # a live edge starts at a node with a value
                terms.append(_edge(b, source, ops[k]))
        if terms:
            acc = terms[0]
            for t in terms[1:]:
                acc = b.add(acc, t)
            nodes[dst] = acc
    out = nodes[3]
    return out if out is not None else b.scale(x, 0.0)


def _resblock(b: NetBuilder, x: str, channels: int) -> str:
    """NAS-Bench-201's ResNetBasicblock with stride 2."""
    y = b.bn(b.conv(b.relu(x), channels, 3, stride=2))
    y = b.bn(b.conv(b.relu(y), channels, 3))
    shortcut = b.conv(b.avgpool(x, 2, 2), channels, 1, padding=0)
    return b.add(shortcut, y)


def _build(
    ops: Sequence[str] | None,
    input_shape: tuple[int, ...],
    name: str,
    meta: dict[str, Any] | None = None,
) -> NetworkGraph:
    """The network; ``ops=None`` builds the skeleton with empty (identity) cells."""
    b = NetBuilder(name, input_shape, meta=meta)
    x = b.bn(b.conv(b.input, STAGE_CHANNELS[0], 3))
    for stage, channels in enumerate(STAGE_CHANNELS):
        if stage:
            x = _resblock(b, x, channels)
        for _ in range(CELLS_PER_STAGE):
            if ops is not None:
                x = _cell(b, x, ops)
    x = b.relu(b.bn(x))
    x = b.flatten(b.global_avgpool(x))
    b.gemm(x, NUM_CLASSES)
    return b.build()


def _input_shape(batch: int, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape) if input_shape else (batch, *INPUT_CHW)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1 or shape[2] % 4 or shape[3] % 4:
        raise NetworkReferenceError(
            f"nb201 networks take an input (N, 3, H, W) with H, W multiples of 4, got {shape}"
        )
    return shape


def build_nb201(
    arch: str | Sequence[str],
    batch: int = 1,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
) -> NetworkGraph:
    """The fully built IR of an nb201 network (``arch`` as a string or six ops)."""
    ops = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
    arch_str = format_arch(ops)
    ref = name or f"nb201:{arch_str}"
    meta = {"reference": ref, "family": "nb201", "arch": arch_str, "ops": ops}
    return _build(ops, _input_shape(batch, input_shape), ref, meta)


# --------------------------------------------------------------------------- fast totals

#: Edge kinds of the additive cost table (a cell's cost is a combination of these).
_PARTS = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "add", "zero")


@dataclass(frozen=True)
class _CostTable:
    """Totals of the skeleton and the cost of each cell part, summed over all cells."""

    kinds: tuple[str, ...]
    skeleton: np.ndarray  # counts vector of the skeleton (see _vector)
    skeleton_depth: int
    parts: np.ndarray  # (len(_PARTS), vector length): cost of one part in every cell


def _vector(graph: NetworkGraph, kinds: tuple[str, ...]) -> np.ndarray:
    """COUNT_FIELDS sums, layer count, then counts and MACs per kind (exact int64)."""
    t = graph.totals
    values = [getattr(t, f) for f in COUNT_FIELDS] + [t.n_layers]
    values += [t.op_counts.get(k, 0) for k in kinds] + [t.op_macs.get(k, 0) for k in kinds]
    return np.asarray(values, dtype=np.int64)


def _part_graph(op: str, shape: tuple[int, ...]) -> NetworkGraph:
    b = NetBuilder("part", shape)
    if op == "add":
        b.add(b.input, b.input)
    elif op == "zero":
        b.scale(b.input, 0.0)
    else:
        _edge(b, b.input, op)
    return b.build()


def _make_table(input_shape: tuple[int, ...]) -> _CostTable:
    skeleton = _build(None, input_shape, "skeleton")
    # The shape every cell of each stage sees, read from the skeleton itself.
    stage_shapes: list[tuple[int, ...]] = []
    for layer in skeleton.layers:
        if layer.kind == "norm" and len(stage_shapes) == 0:
            stage_shapes.append(layer.output_shape)  # stem output
        elif layer.op == "Add":
            stage_shapes.append(layer.output_shape)  # output of each reduction block
    parts_graphs = [[_part_graph(p, s) for p in _PARTS] for s in stage_shapes]
    kinds = tuple(
        sorted(
            set(skeleton.totals.op_counts).union(
                *(g.totals.op_counts for row in parts_graphs for g in row)
            )
        )
    )
    parts = sum(
        (np.stack([_vector(g, kinds) for g in row]) for row in parts_graphs),
        start=np.zeros((len(_PARTS), len(COUNT_FIELDS) + 1 + 2 * len(kinds)), dtype=np.int64),
    )
    return _CostTable(
        kinds, _vector(skeleton, kinds), skeleton.totals.depth, parts * CELLS_PER_STAGE
    )


_TABLES: dict[tuple[int, ...], _CostTable] = {}
_TABLES_LOCK = Lock()


def _table(input_shape: tuple[int, ...]) -> _CostTable:
    table = _TABLES.get(input_shape)
    if table is None:
        with _TABLES_LOCK:
            table = _TABLES.get(input_shape) or _make_table(input_shape)
            _TABLES[input_shape] = table
    return table


def cell_profile(ops: Sequence[str]) -> tuple[tuple[int, ...], int]:
    """How many of each cell part (:data:`_PARTS`) the cell builds, and its conv depth."""
    live = live_edges(ops)
    counts = dict.fromkeys(_PARTS, 0)
    n_in = [0, 0, 0, 0]
    depth = [0, -1, -1, -1]  # -1: no value
    for k, (dst, src) in enumerate(EDGES):
        if live[k]:
            if ops[k] != "skip_connect":
                counts[ops[k]] += 1
            n_in[dst] += 1
            w = 1 if ops[k].startswith("nor_conv") else 0
            depth[dst] = max(depth[dst], depth[src] + w)
    counts["add"] = sum(max(n - 1, 0) for n in n_in)
    counts["zero"] = int(n_in[3] == 0)
    return tuple(counts[p] for p in _PARTS), max(depth[3], 0)


@lru_cache(maxsize=1 << 15)
def _arch_facts(ops: tuple[str, ...]) -> tuple[str, str, tuple[int, ...], int]:
    """Arch string, canonical arch string, cell part counts and cell depth of ``ops``
    (cached: the space has 15,625 members, and encoding it asks for each many times)."""
    counts, depth = cell_profile(ops)
    return format_arch(ops), format_arch(canonical_ops(ops)), counts, depth


@lru_cache(maxsize=4096)
def _total_values(counts: tuple[int, ...], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    table = _table(input_shape)
    v = table.skeleton + np.asarray(counts, dtype=np.int64) @ table.parts
    return tuple(int(x) for x in v)


def fast_totals(ops: Sequence[str], input_shape: tuple[int, ...]) -> NetworkTotals:
    """Totals of an nb201 network from the additive cost table (equal to the built graph's)."""
    _, _, counts, cell_depth = _arch_facts(tuple(ops))
    values = _total_values(counts, input_shape)
    table = _table(input_shape)
    n = len(COUNT_FIELDS)
    nk = len(table.kinds)
    kind_counts = values[n + 1 : n + 1 + nk]
    kind_macs = values[n + 1 + nk :]
    present = [i for i, c in enumerate(kind_counts) if c]
    return NetworkTotals(
        **dict(zip(COUNT_FIELDS, values[:n], strict=True)),
        n_layers=values[n],
        depth=table.skeleton_depth + len(STAGE_CHANNELS) * CELLS_PER_STAGE * cell_depth,
        op_counts={table.kinds[i]: kind_counts[i] for i in present},
        op_macs={table.kinds[i]: kind_macs[i] for i in present},
        unknown_ops=(),
    )


def arch_digest(ops: Sequence[str], input_shape: tuple[int, ...]) -> str:
    """Digest of an nb201 network from its canonical arch and input shape."""
    key = f"nb201|{_arch_facts(tuple(ops))[1]}|{input_shape}"
    return hashlib.sha1(key.encode()).hexdigest()


# --------------------------------------------------------------------------- scheme and space

#: parse_arch with a cache: references are validated and then resolved, often repeatedly.
_parse = lru_cache(maxsize=1 << 16)(parse_arch)


def nb201_graph(
    arch: str | Sequence[str], batch: int = 1, input_shape: Sequence[int] | None = None
) -> LazyNetworkGraph:
    """The lazy graph of an nb201 network: fast totals and digest, layers on demand."""
    ops = _parse(arch) if isinstance(arch, str) else tuple(arch)
    shape = _input_shape(batch, input_shape)
    arch_str = _arch_facts(ops)[0]
    ref = f"nb201:{arch_str}"
    meta = {"reference": ref, "family": "nb201", "arch": arch_str, "ops": ops}
    return LazyNetworkGraph(
        ref,
        build=lambda: _build(ops, shape, ref, meta),
        meta=meta,
        totals_fn=lambda: fast_totals(ops, shape),
        digest_value=arch_digest(ops, shape),
    )


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    return nb201_graph(body, opts.batch, opts.input_shape)


def all_nb201() -> list[str]:
    """References of all 15,625 nb201 networks, in :func:`all_archs` order."""
    return [f"nb201:{a}" for a in all_archs()]


def sample_nb201(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct nb201 references drawn uniformly without replacement (seeded)."""
    rng = np.random.default_rng(seed)
    archs = all_archs()
    return [f"nb201:{archs[i]}" for i in rng.choice(len(archs), size=count, replace=False)]


class _LazyNb201(NetworkGraph):
    """An nb201 network whose layers, totals and digest are computed on first use (the
    serving fast path: no cell profile or digest up front, unlike :func:`nb201_graph`)."""

    def __init__(self, ref: str, arch: str, ops: tuple[str, ...]) -> None:
        self.name = ref
        self.meta = {"reference": ref, "family": "nb201", "arch": arch, "ops": ops}
        self._ops = ops

    @property
    def full(self) -> NetworkGraph:
        from latlab.datasets.references import resolve

        return resolve(self.name)

    @property
    def layers(self) -> Any:  # type: ignore[override]
        return self.full.layers

    @property
    def inputs(self) -> Any:  # type: ignore[override]
        return self.full.inputs

    @property
    def outputs(self) -> Any:  # type: ignore[override]
        return self.full.outputs

    @property
    def totals(self) -> Any:  # type: ignore[override]
        return self.full.totals

    @property
    def digest(self) -> str:  # type: ignore[override]
        return self.full.digest


class Nb201Space(SearchSpace):
    """NAS-Bench-201 as a search-space plug-in: cells of six edges with five ops each.

    Genotype: the six op positions in :data:`OPS`; mutation changes one edge's op. Encodings:
    the cell one-hot and op counts (vector predictors), the BRP-NAS cell graph (GCN). Serving
    reads bare arch strings (``|...|``) as ``nb201:`` references and resolves canonical ones
    through a look-up in the table of the whole space (:func:`arch_index`).
    """

    vector_features = "nb201-onehot+nb201-counts"
    onehot = "nb201-onehot"
    counts = "nb201-counts"
    graph = "nb201-cell"
    counts_additive = True
    #: A runtime that executes every edge's op (edge counts), or one that prunes the ops whose
    #: result reaches no output (live counts): two hypotheses, each a transfer pseudo-source,
    #: beside the summary every space offers.
    additive_counts = ("nb201-edge-counts", "nb201-live-counts", "summary-linear")
    bare_prefix = "|"

    def __init__(self) -> None:
        super().__init__(
            "nb201", None, "NAS-Bench-201: all 15,625 cells, CIFAR skeleton", SPACE_SIZE
        )

    def parse(self, body: str) -> tuple[str, ...]:
        return _parse(body)

    def owns(self, graph: NetworkGraph) -> bool:
        return graph.family == "nb201" and "ops" in graph.meta

    def canonical(self, reference: str) -> str:
        return f"nb201:{format_arch(_parse(reference.removeprefix('nb201:')))}"

    def sample(self, count: int, seed: int = 0) -> list[str]:
        return sample_nb201(count, seed)

    def enumerate(self) -> list[str]:
        return all_nb201()

    def random_genotype(self, rng: np.random.Generator) -> Genotype:
        return tuple(int(i) for i in rng.integers(0, len(OPS), len(EDGES)))

    def mutate(self, genotype: Genotype, rng: np.random.Generator) -> Genotype:
        edge = int(rng.integers(len(EDGES)))
        new = int(rng.integers(len(OPS) - 1))
        new += new >= genotype[edge]  # any op but the current one
        out = list(genotype)
        out[edge] = new
        return tuple(out)

    def format_genotype(self, genotype: Genotype) -> str:
        return "nb201:" + format_arch([OPS[i] for i in genotype])

    def genotype(self, reference: str) -> Genotype:
        return tuple(OPS.index(op) for op in _parse(reference.removeprefix("nb201:")))

    def fast_resolve(self, reference: str) -> NetworkGraph | None:
        # A look-up in a table of the whole (finite) space, built in milliseconds by
        # formatting: the general parser validates, re-formats and profiles the cell per
        # call, ~20x the cost, which was most of the cost of encoding the whole space.
        if not reference.startswith("nb201:"):
            return None
        arch = reference[6:]
        ops = arch_index().get(arch)
        return None if ops is None else _LazyNb201(reference, arch, ops)


#: The ``nb201:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "nb201",
    _resolve,
    validate=_parse,
    help="NAS-Bench-201 cell string on the standard CIFAR skeleton (3x32x32 input)",
)
#: The nb201 space plug-in.
SPACE = Nb201Space()
