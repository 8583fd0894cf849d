"""Test-only NAS-Bench-201 graphs: lazy graphs with the nb201 meta and fast, exact totals.

The real nb201 space lives in ``latlab.datasets.spaces.nb201`` (another module's job); the
encoder tests and the feature benchmark need nb201 graphs of the same shape -- a
:class:`LazyNetworkGraph` with ``meta = {"reference", "family", "arch", "ops"}`` and fast
``totals`` -- without depending on it. The network follows the NAS-Bench-201 CIFAR skeleton
(stem, 3 stages of 5 cells, stride-2 residual blocks, BN-ReLU, GAP, linear), with the
PyTorch reference's cell ops: ReLU-Conv-BN, identity skip, 3x3 average pooling and
``none`` as a multiplication by zero.

Totals are computed by formula: skeleton totals plus five times the per-stage cell cost, where a
cell's cost is the sum of its edge ops' and node-sum Adds' costs and its depth the longest
conv-weighted path through the cell. ``test_graph_encoders`` checks the formula against the
built graphs.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import COUNT_FIELDS, LazyNetworkGraph, NetworkGraph, NetworkTotals
from latlab.encoders.nb201_cell import EDGES, all_archs, parse_arch

STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, spatial size)


def _edge(b: NetBuilder, x: str, op: str) -> str | None:
    c = b.shape(x)[1]
    if op == "none":
        return b.add_layer("Mul", [x], weight_shapes=[(1,)])[0]
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return b.avgpool(x, 3, 1, padding=1)
    k = 1 if op == "nor_conv_1x1" else 3
    return b.bn(b.conv(b.relu(x), c, k))


def _cell(b: NetBuilder, x: str, ops: tuple[str, ...]) -> str:
    nodes = [x]
    k = 0
    for node in range(1, 4):
        outs = []
        for src in range(node):
            outs.append(_edge(b, nodes[src], ops[k]))
            k += 1
        y = outs[0]
        for o in outs[1:]:
            y = b.add(y, o)
        nodes.append(y)
    return nodes[3]


def _resblock(b: NetBuilder, x: str, planes: int) -> str:
    a = b.bn(b.conv(b.relu(x), planes, 3, stride=2))
    a = b.bn(b.conv(b.relu(a), planes, 3))
    d = b.conv(b.avgpool(x, 2, 2), planes, 1)
    return b.add(d, a)


def build_nb201(arch: str | None, batch: int = 1) -> NetworkGraph:
    """The full network of ``arch`` (``None``: the skeleton without cells, for the formula)."""
    ops = parse_arch(arch) if arch is not None else None
    b = NetBuilder(f"nb201:{arch}", (batch, 3, 32, 32), meta={"family": "nb201"})
    x = b.bn(b.conv(b.input, 16, 3))
    for s, (c, _) in enumerate(STAGES):
        if s:
            x = _resblock(b, x, c)
        for _ in range(5):
            if ops is not None:
                x = _cell(b, x, ops)
    x = b.relu(b.bn(x))
    x = b.flatten(b.global_avgpool(x))
    b.gemm(x, 10)
    return b.build()


def _totals_of(layers) -> tuple[dict[str, int], Counter, Counter]:
    sums = dict.fromkeys(COUNT_FIELDS, 0)
    counts: Counter[str] = Counter()
    macs: Counter[str] = Counter()
    for layer in layers:
        for f in COUNT_FIELDS:
            sums[f] += getattr(layer, f)
        counts[layer.kind] += 1
        macs[layer.kind] += layer.macs
    return sums, counts, macs


@cache
def _skeleton() -> NetworkTotals:
    return build_nb201(None).totals


@cache
def _edge_cost(stage: int, op: str) -> tuple[dict[str, int], Counter, Counter, int]:
    c, hw = STAGES[stage]
    b = NetBuilder("edge", (1, c, hw, hw))
    _edge(b, b.input, op)
    sums, counts, macs = _totals_of(b.layers)
    return sums, counts, macs, (1 if op.startswith("nor_conv") else 0)


@cache
def _add_cost(stage: int) -> tuple[dict[str, int], Counter, Counter]:
    c, hw = STAGES[stage]
    b = NetBuilder("add", (1, c, hw, hw))
    b.add(b.input, b.input)
    return _totals_of(b.layers)


@cache
def nb201_totals(ops: tuple[str, ...]) -> NetworkTotals:
    """Totals of the network with cell ``ops`` by formula (batch 1)."""
    sk = _skeleton()
    sums = {f: getattr(sk, f) for f in COUNT_FIELDS}
    counts: Counter[str] = Counter(sk.op_counts)
    macs: Counter[str] = Counter(sk.op_macs)
    n_layers = sk.n_layers
    depth = sk.depth
    n_adds = sum(node - 1 for node in range(1, 4))
    for s in range(len(STAGES)):
        cell_sums = dict.fromkeys(COUNT_FIELDS, 0)
        cell_counts: Counter[str] = Counter()
        cell_macs: Counter[str] = Counter()
        w = []
        for op in ops:
            es, ec, em, ed = _edge_cost(s, op)
            for f in COUNT_FIELDS:
                cell_sums[f] += es[f]
            cell_counts.update(ec)
            cell_macs.update(em)
            w.append(ed)
        a_s, a_c, a_m = _add_cost(s)
        for f in COUNT_FIELDS:
            cell_sums[f] += n_adds * a_s[f]
        for _ in range(n_adds):
            cell_counts.update(a_c)
            cell_macs.update(a_m)
        d1 = w[0]
        d2 = max(w[1], d1 + w[2])
        d3 = max(w[3], d1 + w[4], d2 + w[5])
        for f in COUNT_FIELDS:
            sums[f] += 5 * cell_sums[f]
        for k, v in cell_counts.items():
            counts[k] += 5 * v
        for k, v in cell_macs.items():
            macs[k] += 5 * v
        n_layers += 5 * sum(cell_counts.values())
        depth += 5 * d3
    return NetworkTotals(
        n_layers=n_layers,
        depth=depth,
        op_counts=dict(counts),
        op_macs=dict(macs),
        unknown_ops=(),
        **sums,
    )


def nb201_graph(arch: str) -> LazyNetworkGraph:
    """A lazy nb201 graph with the meta and fast totals the real space will give."""
    ops = parse_arch(arch)
    assert len(ops) == len(EDGES)
    return LazyNetworkGraph(
        f"nb201:{arch}",
        build=lambda: build_nb201(arch),
        meta={"reference": f"nb201:{arch}", "family": "nb201", "arch": arch, "ops": ops},
        totals_fn=lambda: nb201_totals(ops),
    )


def nb201_graphs(archs: list[str] | None = None) -> list[LazyNetworkGraph]:
    """Lazy graphs of ``archs`` (default: all 15,625, in :func:`all_archs` order)."""
    return [nb201_graph(a) for a in (archs if archs is not None else all_archs())]
