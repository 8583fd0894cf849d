"""Vector encoders: hand-computed summaries, FCNN widths, nb201 one-hot, unions and JSON state."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import FeatureUnion, make_pipeline, make_union

from latlab.datasets.spaces.fcnn import build_fcnn
from latlab.encoders import NetBuilder
from latlab.encoders.base import encoder_from_state, encoder_to_state
from latlab.encoders.ir import LazyNetworkGraph
from latlab.encoders.nb201_cell import all_archs
from latlab.encoders.vector import (
    NB201_ONEHOT_FEATURES,
    SUMMARY_FEATURES,
    LayerWidthEncoder,
    Nb201OneHotEncoder,
    SummaryEncoder,
    make_vector_encoder,
    mlp_widths,
)
from latlab.errors import FeatureError, NotFittedError
from nb201_testnets import nb201_graph, nb201_graphs


def tiny_convnet(name: str = "tiny"):
    """conv3x3(3->4) - BN - ReLU - maxpool2 - GAP - flatten - gemm(4->2) on 1x3x8x8."""
    b = NetBuilder(name, (1, 3, 8, 8))
    x = b.relu(b.bn(b.conv(b.input, 4, 3)))
    x = b.flatten(b.global_avgpool(b.maxpool(x, 2)))
    b.gemm(x, 2)
    return b.build()


def test_summary_of_tiny_convnet_by_hand():
    g = tiny_convnet()
    row = SummaryEncoder(log1p=False).fit_transform([g])[0]
    got = dict(zip(SUMMARY_FEATURES, row, strict=True))
    # conv: 4x8x8 outputs x 27 MACs; gemm: 2 outputs x 4 MACs.
    assert got["macs"] == 4 * 64 * 27 + 8 == 6920
    # conv 2*6912, BN 2*256, ReLU 256, maxpool 64*4, GAP 64 (input elems), gemm 2*8 + 2 bias
    assert got["flops"] == 13824 + 512 + 256 + 256 + 64 + 18
    assert got["params"] == 108 + 8 + 10  # conv weights, BN scale+bias, gemm W+b
    assert got["bytes_read"] == 4 * (192 + 256 + 256 + 256 + 64 + 4 + 4)
    assert got["bytes_written"] == 4 * (256 + 256 + 256 + 64 + 4 + 4 + 2)
    assert got["weight_bytes"] == 4 * (108 + 16 + 10)  # BN stores 4 vectors
    assert got["layers"] == 7
    assert got["depth"] == 2  # conv and gemm
    counts = {k[6:]: v for k, v in got.items() if k.startswith("count_") and v}
    assert counts == {"conv": 1, "norm": 1, "act": 1, "pool": 1, "gpool": 1, "data": 1, "fc": 1}
    assert got["macs_conv"] == 6912 and got["macs_fc"] == 8 and got["macs_dwconv"] == 0
    logged = SummaryEncoder().transform([g])[0]
    np.testing.assert_allclose(logged, np.log1p(row))
    assert len(SUMMARY_FEATURES) == 27
    assert list(SummaryEncoder().get_feature_names_out()) == list(SUMMARY_FEATURES)


def test_summary_refuses_unknown_ops_naming_the_network():
    b = NetBuilder("weird-net", (1, 3, 8, 8))
    y = b.conv(b.input, 4, 3)
    b.add_layer("FancyOp", [y], output_shapes=[b.shape(y)])
    g = b.build()
    with pytest.raises(FeatureError, match=r"weird-net.*FancyOp"):
        SummaryEncoder().transform([g])
    row = SummaryEncoder(allow_unknown=True, log1p=False).transform([g])[0]
    assert row[SUMMARY_FEATURES.index("count_other")] == 1
    assert row[SUMMARY_FEATURES.index("layers")] == 2


def test_inputs_must_be_sequences_of_graphs():
    g = tiny_convnet()
    with pytest.raises(FeatureError, match="single NetworkGraph"):
        SummaryEncoder().transform(g)
    with pytest.raises(FeatureError, match="item 1 is a str"):
        SummaryEncoder().transform([g, "fcnn:3-4-2"])


def test_layer_widths_from_meta_and_from_the_ir_agree():
    graphs = [build_fcnn(w) for w in [(10, 20, 5), (3, 50, 50, 50, 50, 50, 7), (1, 1)]]
    for g in graphs:
        assert mlp_widths(g) == mlp_widths(g, use_meta=False) == tuple(g.meta["widths"])
    enc = LayerWidthEncoder().fit(graphs)
    assert enc.max_layers_ == 6
    out = enc.transform(graphs)
    assert out.shape == (3, 7)
    np.testing.assert_array_equal(out[0], [10, 20, 5, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[2], [1, 1, 0, 0, 0, 0, 0])
    assert list(enc.get_feature_names_out())[:3] == ["width_in", "width_1", "width_2"]


def test_layer_widths_of_an_mlp_without_meta():
    b = NetBuilder("matmul-mlp", (1, 12))
    x = b.matmul(b.input, 30)
    x = b.add_layer("Add", [x], weight_shapes=[(30,)])[0]  # bias as exporters emit it
    x = b.softmax(b.matmul(b.relu(x), 4))
    g = b.build()
    assert "widths" not in g.meta
    np.testing.assert_array_equal(
        LayerWidthEncoder(max_layers=3).fit_transform([g]), [[12, 30, 4, 0]]
    )


def test_layer_widths_errors_name_the_network():
    with pytest.raises(FeatureError, match=r"'tiny'.*not a multilayer perceptron.*Conv"):
        LayerWidthEncoder(max_layers=5).fit([tiny_convnet()])
    b = NetBuilder("branchy", (1, 8))
    x = b.gemm(b.input, 8)
    b.gemm(b.add(x, b.input), 3)
    with pytest.raises(FeatureError, match=r"'branchy'.*not a multilayer perceptron"):
        mlp_widths(b.build())
    enc = LayerWidthEncoder(max_layers=2).fit([build_fcnn((4, 4, 4))])
    with pytest.raises(FeatureError, match=r"'fcnn:4-4-4-4'.*3 fully connected.*max_layers=2"):
        enc.transform([build_fcnn((4, 4)), build_fcnn((4, 4, 4, 4))])
    with pytest.raises(NotFittedError, match="LayerWidthEncoder"):
        LayerWidthEncoder().transform([build_fcnn((4, 4))])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=7))
def test_widths_and_macs_of_random_mlps(widths):
    g = build_fcnn(tuple(widths))
    assert mlp_widths(g, use_meta=False) == tuple(widths)
    row = LayerWidthEncoder(max_layers=6).fit_transform([g])[0]
    np.testing.assert_array_equal(row[: len(widths)], widths)
    assert not row[len(widths) :].any()
    macs = SummaryEncoder(log1p=False).transform([g])[0][0]
    assert macs == sum(a * b for a, b in itertools.pairwise(widths))


ARCH = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


def test_nb201_one_hot_of_known_archs():
    enc = Nb201OneHotEncoder()
    out = enc.fit_transform([nb201_graph(ARCH), nb201_graph(all_archs()[0])])
    assert out.shape == (2, 30)
    # ops 3,3,4,1,3,1 on edges 0..5 -> columns 5e + op
    assert list(np.flatnonzero(out[0])) == [3, 8, 14, 16, 23, 26]
    assert list(np.flatnonzero(out[1])) == [0, 5, 10, 15, 20, 25]  # all "none"
    names = enc.get_feature_names_out()
    assert names[3] == "1<-0=nor_conv_3x3" and names[26] == "3<-2=skip_connect"
    assert tuple(names) == NB201_ONEHOT_FEATURES


def test_nb201_one_hot_uses_only_meta_never_layers():
    def no_build():
        raise AssertionError("the nb201 encoders must not build layers")

    lazy = LazyNetworkGraph(f"nb201:{ARCH}", build=no_build, meta={"arch": ARCH})
    by_ref = LazyNetworkGraph(f"nb201:{ARCH}", build=no_build)
    out = Nb201OneHotEncoder().transform([lazy, by_ref, nb201_graph(ARCH)])
    assert (out == out[0]).all()


def test_nb201_one_hot_of_the_whole_space_is_a_bijection():
    graphs = nb201_graphs()
    out = Nb201OneHotEncoder().transform(graphs)
    assert out.shape == (15625, 30)
    assert (out.sum(axis=1) == 6).all()
    assert len(np.unique(out, axis=0)) == 15625


def test_nb201_one_hot_refuses_other_networks():
    with pytest.raises(FeatureError, match="'tiny' is not a NAS-Bench-201 network"):
        Nb201OneHotEncoder().transform([tiny_convnet()])
    bad = LazyNetworkGraph("x", build=tiny_convnet, meta={"arch": "|conv~0|"})
    with pytest.raises(FeatureError, match="malformed NAS-Bench-201 arch"):
        Nb201OneHotEncoder().transform([bad])


def test_union_concatenates_and_round_trips_through_json():
    graphs = nb201_graphs(all_archs()[::997])
    union = make_union(SummaryEncoder(), Nb201OneHotEncoder())
    out = union.fit_transform(graphs)
    assert out.shape == (len(graphs), 57)
    names = union.get_feature_names_out()
    assert names[0] == "summaryencoder__macs" and names[27] == "nb201onehotencoder__1<-0=none"
    state = json.loads(json.dumps(encoder_to_state(union)))
    again = encoder_from_state(state)
    assert isinstance(again, FeatureUnion)
    np.testing.assert_array_equal(again.transform(graphs), out)
    by_name = make_vector_encoder("summary+nb201-onehot")
    np.testing.assert_array_equal(by_name.fit_transform(graphs), out)
    with pytest.raises(FeatureError, match="unknown vector encoder 'bogus'"):
        make_vector_encoder("summary+bogus")


def test_state_round_trip_of_fitted_width_encoder_and_sklearn_protocols():
    graphs = [build_fcnn((5, 9, 3)), build_fcnn((5, 9, 9, 9, 3))]
    enc = LayerWidthEncoder().fit(graphs)
    state = json.loads(json.dumps(enc.to_state()))
    assert state["fitted"] == {"max_layers_": 4}
    again = encoder_from_state(state)
    np.testing.assert_array_equal(again.transform(graphs), enc.transform(graphs))
    assert clone(SummaryEncoder(log1p=False)).get_params() == {
        "log1p": False,
        "allow_unknown": False,
    }
    with pytest.raises(FeatureError, match="unknown encoder 'Pickle'"):
        encoder_from_state({"encoder": "Pickle", "params": {}})
    # A predictor is a Pipeline: encoder + regressor, fitted on graphs directly.
    y = np.array([1.0, 2.0])
    model = make_pipeline(LayerWidthEncoder(), LinearRegression()).fit(graphs, y)
    np.testing.assert_allclose(model.predict(graphs), y)
