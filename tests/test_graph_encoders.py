"""Graph encoders: edge counts, global-node wiring, BRP-NAS cell graphs and JSON state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv

from latlab.datasets.spaces.fcnn import build_fcnn
from latlab.encoders import NetBuilder
from latlab.encoders.base import encoder_from_state
from latlab.encoders.graph import (
    NODE_NUMERIC,
    GraphEncoder,
    Nb201CellGraphEncoder,
    brp_adjacency,
)
from latlab.encoders.ir import LazyNetworkGraph
from latlab.encoders.nb201_cell import OPS, all_archs, parse_arch
from latlab.errors import FeatureError, NotFittedError
from nb201_testnets import build_nb201, nb201_graph, nb201_graphs, nb201_totals


def residual_net(name="res", channels=8):
    """conv - relu - [conv + skip] add - GAP - flatten - gemm: 7 layers, 7 data-flow edges."""
    b = NetBuilder(name, (1, 3, 16, 16))
    x = b.relu(b.conv(b.input, channels, 3))
    y = b.add(b.conv(x, channels, 3), x)
    b.gemm(b.flatten(b.global_avgpool(y)), 10)
    return b.build()


def edge_set(data):
    return {tuple(e) for e in data.edge_index.t().tolist()}


def test_generic_graph_nodes_edges_and_global_node():
    g = residual_net()
    assert len(g.layers) == 7 and len(g.edges()) == 7
    enc = GraphEncoder().fit([g])
    (d,) = enc.transform([g])
    n = 1 + 1 + 7  # global, input, layers
    assert d.num_nodes == n and d.x.shape == (n, enc.num_node_features)
    flow = 7 + 1  # layer-to-layer + input -> first conv
    assert d.edge_index.shape[1] == flow + (n - 1) + n  # + every node -> global + self-loops
    edges = edge_set(d)
    assert {s for s, t in edges if t == 0} == set(range(n))  # global hears every node
    assert {t for s, t in edges if s == 0} == {0}  # and sends only to itself
    # default direction "reverse": the add (node 2+3) aggregates from its consumer GAP (2+4)
    assert (6, 5) in edges and (5, 6) not in edges
    assert (2, 1) in edges  # first conv -> input node, reversed
    assert d.global_index.tolist() == [0]
    assert d.graph_features.shape == (1, 27)
    fwd = GraphEncoder(direction="forward", global_edges="both", self_loops=False).fit([g])
    (d2,) = fwd.transform([g])
    assert d2.edge_index.shape[1] == flow + 2 * (n - 1)
    assert (5, 6) in edge_set(d2) and (0, 5) in edge_set(d2)
    (d3,) = (
        GraphEncoder(global_node=False, input_nodes=False, self_loops=False).fit([g]).transform([g])
    )
    assert d3.num_nodes == 7 and d3.edge_index.shape[1] == 7 and "global_index" not in d3


def test_generic_node_features_one_hots_and_scaling():
    train = [residual_net("a", 8), residual_net("b", 32), build_fcnn((10, 20, 5))]
    enc = GraphEncoder().fit(train)
    names = list(enc.get_feature_names_out())
    assert names[:2] == ["role=input", "role=global"]
    assert "kind=conv" in names and "op=Gemm" in names and "op=<unk>" in names
    assert names[-len(NODE_NUMERIC) :] == list(NODE_NUMERIC)
    data = enc.transform(train)
    k = len(names) - len(NODE_NUMERIC)
    for d in data:
        onehot = d.x[:, :k]
        assert torch.equal(onehot[0], torch.eye(k)[1])  # global: role only
        assert (onehot[2:].sum(dim=1) == 2).all()  # layers: one kind + one op
        assert onehot[1, 0] == 1 and onehot[1].sum() == 1  # input node
        assert (d.x[0, k:] == 0).all()  # global numeric part
    numeric = torch.cat([d.x[1:, k:] for d in data]).double()
    zero = torch.zeros(len(NODE_NUMERIC), dtype=torch.float64)
    assert torch.allclose(numeric.mean(0), zero, atol=1e-5)
    # an op never seen in fit lands in <unk>, its kind still known
    b = NetBuilder("sig", (1, 10))
    b.sigmoid(b.gemm(b.input, 20))
    (d,) = enc.transform([b.build()])
    assert d.x[-1, names.index("op=<unk>")] == 1 and d.x[-1, names.index("kind=act")] == 1


def test_generic_encoder_state_round_trip_gives_identical_data():
    train = [residual_net("a", 8), build_nb201(all_archs()[1234])]
    enc = GraphEncoder().fit(train)
    state = json.loads(json.dumps(enc.to_state()))
    again = encoder_from_state(state)
    for a, b in zip(enc.transform(train), again.transform(train), strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.graph_features, b.graph_features)


def test_generic_encoder_errors():
    with pytest.raises(NotFittedError, match="GraphEncoder"):
        GraphEncoder().transform([residual_net()])
    with pytest.raises(FeatureError, match="direction must be one of"):
        GraphEncoder(direction="sideways").fit([residual_net()])
    b = NetBuilder("strange", (1, 4))
    b.add_layer("Custom", [b.input], output_shapes=[(1, 4)])
    with pytest.raises(FeatureError, match=r"'strange'.*Custom"):
        GraphEncoder().fit([b.build()])
    assert GraphEncoder(allow_unknown=True).fit([b.build()]).transform([b.build()])


def test_batches_run_through_a_gcn_and_read_out_global_nodes():
    graphs = [residual_net("a"), build_fcnn((4, 8, 2)), build_nb201(all_archs()[77])]
    enc = GraphEncoder().fit(graphs)
    batch = Batch.from_data_list(enc.transform(graphs))
    sizes = [d.num_nodes for d in enc.transform(graphs)]
    assert batch.global_index.tolist() == [0, sizes[0], sizes[0] + sizes[1]]
    h = GCNConv(enc.num_node_features, 16)(batch.x, batch.edge_index)
    readout = torch.cat([h[batch.global_index], batch.graph_features], dim=1)
    assert readout.shape == (3, 16 + enc.num_graph_features)


# --------------------------------------------------------------------------- nb201 cell


def eagle_reference(ops):
    """BRP-NAS's cell matrix and features, re-derived from its published algorithm.

    8 nodes (input, six ops, output); none ops cut, skip ops bypassed, then dangling nodes
    cut (kept as empty rows); global node prepended with a row of ones; identity added.
    """
    m = [[0] * 8 for _ in range(8)]
    for s, t in [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)]:
        m[s][t] = 1
    label = [None] * 8
    for i, op in enumerate(ops, start=1):
        if op == "none":
            for o in range(8):
                m[o][i] = m[i][o] = 0
        elif op == "skip_connect":
            outs = [o for o in range(8) if m[i][o]]
            ins = [o for o in range(8) if m[o][i]]
            for p in ins:
                for s in outs:
                    m[p][s] = 1
                m[p][i] = 0
            if ins:
                for s in outs:
                    m[i][s] = 0
        else:
            label[i] = op

    def reach(start, forward):
        seen, todo = {start}, [start]
        while todo:
            v = todo.pop()
            for o in range(8):
                if o not in seen and (m[v][o] if forward else m[o][v]):
                    seen.add(o)
                    todo.append(o)
        return seen

    keep = reach(0, True) & reach(7, False)
    for v in range(8):
        if v not in keep:
            label[v] = None
            for o in range(8):
                m[v][o] = m[o][v] = 0
    adj = [[0, *row] for row in m]
    adj.insert(0, [0] + [1] * 8)
    for i in range(9):
        adj[i][i] = 1
    feats = [[0] * 6 for _ in range(9)]
    feats[0][5] = feats[1][3] = feats[8][4] = 1
    for v in range(1, 7):
        if label[v] is not None:
            feats[v + 1][OPS.index(label[v]) - 2] = 1
    return np.array(adj), np.array(feats)


def test_brp_matrices_match_the_reference_algorithm_on_the_whole_space():
    for arch in all_archs():
        ops = parse_arch(arch)
        adj, feats = brp_adjacency(ops)
        ref_adj, ref_feats = eagle_reference(ops)
        np.testing.assert_array_equal(adj, ref_adj, err_msg=arch)
        np.testing.assert_array_equal(feats, ref_feats, err_msg=arch)


def test_cell_graph_data_equals_brp_matrices():
    archs = all_archs()[::7]
    data = Nb201CellGraphEncoder().transform(nb201_graphs(archs))
    for arch, d in zip(archs, data, strict=True):
        adj, feats = brp_adjacency(parse_arch(arch))
        dense = np.zeros((9, 9))
        src, dst = d.edge_index.numpy()
        dense[dst, src] = 1  # node dst aggregates src  <=>  BRP-NAS A[dst, src] = 1
        np.testing.assert_array_equal(dense, adj, err_msg=arch)
        np.testing.assert_array_equal(d.x.numpy(), feats, err_msg=arch)


def test_cell_graphs_of_known_archs():
    enc = Nb201CellGraphEncoder()
    assert list(enc.get_feature_names_out()) == [
        "nor_conv_1x1",
        "nor_conv_3x3",
        "avg_pool_3x3",
        "input",
        "output",
        "global",
    ]
    arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"
    all_none, all_conv = all_archs()[0], "|nor_conv_3x3~0|+" + "|nor_conv_3x3~0|nor_conv_3x3~1|+"
    all_conv += "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    d_skip, d_none, d_conv = enc.transform([nb201_graph(a) for a in (arch, all_none, all_conv)])
    loops_and_global = 9 + 8
    assert d_none.edge_index.shape[1] == loops_and_global
    assert d_conv.edge_index.shape[1] == loops_and_global + 10  # all ten cell edges
    # skip 2<-0 becomes input -> op6; nones vanish: flow in->1->3->6->out and in->6
    flow = {(1, 2), (2, 4), (4, 7), (1, 7), (7, 8)}  # +1 for the global node at 0
    assert {(t, s) for s, t in edge_set(d_skip) if s != t and t != 0} == flow
    assert d_skip.x[:, :3].sum(dim=0).tolist() == [0, 2, 1]  # two 3x3 convs, one pool
    assert d_none.x[:, :3].sum() == 0
    batch = Batch.from_data_list([d_skip, d_none, d_conv])
    assert batch.global_index.tolist() == [0, 9, 18]


def test_cell_graph_options():
    g = nb201_graph(all_archs()[4321])
    (plain,) = Nb201CellGraphEncoder(prune=False).transform([g])
    assert plain.x.shape == (9, 8) and plain.edge_index.shape[1] == 10 + 8 + 9
    assert (plain.x[2:8, :5].sum(dim=1) == 1).all()  # every op node one-hot over 5 ops
    (bare,) = Nb201CellGraphEncoder(global_node=False, prune=False, self_loops=False).transform([g])
    assert bare.x.shape == (8, 7) and bare.edge_index.shape[1] == 10
    assert "global_index" not in bare
    (fwd,) = Nb201CellGraphEncoder(prune=False, direction="forward").transform([g])
    assert (1, 2) in edge_set(fwd) and (2, 1) not in edge_set(fwd)


def test_cell_graph_features_never_touch_layers_and_round_trip():
    def no_build():
        raise AssertionError("layers must not be built")

    archs = all_archs()[::500]
    graphs = [
        LazyNetworkGraph(
            f"nb201:{a}",
            build=no_build,
            meta={"arch": a, "ops": parse_arch(a)},
            totals_fn=lambda a=a: nb201_totals(parse_arch(a)),
        )
        for a in archs
    ]
    enc = Nb201CellGraphEncoder(graph_features=True)
    with pytest.raises(NotFittedError):
        enc.transform(graphs)
    data = enc.fit(graphs).transform(graphs)
    gf = torch.cat([d.graph_features for d in data]).double()
    assert gf.shape == (len(archs), 27)
    varying = gf.std(0) > 0
    zero = torch.zeros(int(varying.sum()), dtype=torch.float64)
    assert torch.allclose(gf.mean(0)[varying], zero, atol=1e-5)
    again = encoder_from_state(json.loads(json.dumps(enc.to_state())))
    for a, b in zip(data, again.transform(graphs), strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.graph_features, b.graph_features)
    with pytest.raises(FeatureError, match="'res' is not a NAS-Bench-201 network"):
        Nb201CellGraphEncoder().transform([residual_net()])


@pytest.mark.parametrize(
    "options",
    [{}, {"prune": False}, {"graph_features": True}, {"global_node": False, "self_loops": False}],
)
def test_light_items_carry_exactly_the_tensors_of_the_data_objects(options):
    graphs = nb201_graphs(all_archs()[::97])
    enc = Nb201CellGraphEncoder(**options).fit(graphs)
    for d, item in zip(enc.transform(graphs), enc.transform_light(graphs), strict=True):
        assert torch.equal(d.x, item.x) and torch.equal(d.edge_index, item.edge_index)
        assert d.num_nodes == item.num_nodes and d.network == item.network
        if options.get("global_node", True):
            assert torch.equal(d.global_index, item.global_index)
        else:
            assert item.global_index is None and "global_index" not in d
        if options.get("graph_features"):
            assert torch.equal(d.graph_features, item.graph_features)
        else:
            assert item.graph_features is None and "graph_features" not in d
    nets = [residual_net(), residual_net("wide", 16)]
    generic = GraphEncoder(graph_features=True).fit(nets)
    for d, item in zip(generic.transform(nets), generic.transform_light(nets), strict=True):
        assert torch.equal(d.x, item.x) and torch.equal(d.graph_features, item.graph_features)


def test_test_helper_totals_formula_matches_built_networks():
    random.seed(1)
    for arch in random.sample(all_archs(), 5):
        assert nb201_totals(parse_arch(arch)) == build_nb201(arch).totals
