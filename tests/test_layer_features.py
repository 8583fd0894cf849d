"""ANNETTE per-layer features of known layers and the per-layer table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latlab.datasets.spaces.fcnn import build_fcnn
from latlab.encoders import NetBuilder
from latlab.encoders.base import encoder_from_state
from latlab.encoders.layer_features import (
    ANNETTE_FEATURES,
    LayerFeatureEncoder,
    annette_vector,
    layer_geometry,
)
from latlab.errors import FeatureError


def last_layer(builder_fn, input_shape):
    b = NetBuilder("t", input_shape)
    builder_fn(b)
    return b.layers[-1]


def test_conv_stride2():
    layer = last_layer(lambda b: b.conv(b.input, 32, 3, stride=2), (1, 16, 32, 32))
    macs = 32 * 16 * 16 * 16 * 9
    assert annette_vector(layer) == (16, 16, 16, 32, 3, 3, 2, 2 * macs, 16384, 8192, 4608)


def test_depthwise_conv():
    layer = last_layer(lambda b: b.dwconv(b.input, 3), (1, 32, 16, 16))
    assert layer.kind == "dwconv"
    assert annette_vector(layer) == (16, 16, 32, 32, 3, 3, 1, 2 * 73728, 8192, 8192, 288)


def test_fully_connected():
    layer = last_layer(lambda b: b.gemm(b.input, 10), (1, 64))
    # 2·MACs + one FLOP per output for the bias; weights = W + b
    assert annette_vector(layer) == (1, 1, 64, 10, 1, 1, 1, 1290, 64, 10, 650)


def test_matmul_on_tokens():
    layer = last_layer(lambda b: b.matmul(b.input, 11), (2, 5, 7))
    h, w, c, f, *_ = layer_geometry(layer)
    assert (h, w, c, f) == (5, 1, 7, 11)
    assert annette_vector(layer)[7:] == (2 * 2 * 5 * 7 * 11, 70, 110, 77)


def test_pooling_global_pooling_and_eltwise():
    pool = last_layer(lambda b: b.maxpool(b.input, 3, 2, padding=1), (1, 8, 16, 16))
    assert annette_vector(pool) == (8, 8, 8, 8, 3, 3, 2, 8 * 64 * 9, 2048, 512, 0)
    gap = last_layer(lambda b: b.global_avgpool(b.input), (1, 64, 8, 8))
    assert annette_vector(gap) == (1, 1, 64, 64, 8, 8, 1, 4096, 4096, 64, 0)
    add = last_layer(lambda b: b.add(b.input, b.relu(b.input)), (1, 16, 8, 8))
    assert annette_vector(add) == (8, 8, 16, 16, 1, 1, 1, 1024, 2048, 1024, 0)
    bn = last_layer(lambda b: b.bn(b.input), (1, 16, 8, 8))
    assert annette_vector(bn)[-1] == 4 * 16  # scale, bias, mean, var


def test_table_rows_columns_and_values():
    b = NetBuilder("resnetish", (4, 3, 16, 16))
    x = b.relu(b.bn(b.conv(b.input, 8, 3)))
    y = b.add(b.conv(x, 8, 3), x)
    b.gemm(b.flatten(b.global_avgpool(y)), 5)
    net = b.build()
    mlp = build_fcnn((6, 7, 2))
    df = LayerFeatureEncoder().fit_transform([net, mlp])
    assert list(df.columns) == list(LayerFeatureEncoder.columns())
    assert len(df) == len(net.layers) + len(mlp.layers) == 8 + 3
    assert df["network"].tolist()[:8] == ["resnetish"] * 8
    assert df["network_index"].tolist() == [0] * 8 + [1] * 3
    assert df["layer_index"].tolist() == [*range(8), *range(3)]
    add = df[df["op"] == "Add"].iloc[0]
    assert add["predecessors"] == (3, 2) and add["kind"] == "eltwise"
    first = df.iloc[0]
    assert first["n"] == 4  # batch
    assert first["num_ops"] == 4 * 2 * (8 * 16 * 16 * 27)  # counts include the batch
    for i, layer in enumerate(net.layers):
        np.testing.assert_array_equal(
            df.loc[i, list(ANNETTE_FEATURES)].to_numpy(dtype=np.int64), annette_vector(layer)
        )
        assert df.loc[i, "macs"] == layer.macs and df.loc[i, "bytes_read"] == layer.bytes_read
    assert df[list(ANNETTE_FEATURES)].dtypes.eq(np.int64).all()
    convs = LayerFeatureEncoder(kinds=("conv",)).transform([net, mlp])
    assert convs["layer_index"].tolist() == [0, 3]


def test_table_refuses_unknown_ops_unless_allowed_and_round_trips():
    b = NetBuilder("odd", (1, 4, 4, 4))
    b.add_layer("Mystery", [b.input], output_shapes=[(1, 4, 4, 4)])
    g = b.build()
    with pytest.raises(FeatureError, match=r"'odd'.*Mystery"):
        LayerFeatureEncoder().transform([g])
    enc = LayerFeatureEncoder(allow_unknown=True)
    df = enc.transform([g])
    assert df["known"].tolist() == [False] and df["kind"].tolist() == ["other"]
    again = encoder_from_state(json.loads(json.dumps(enc.to_state())))
    assert again.transform([g]).equals(df)
