"""The IR built directly: shapes and cost rules against hand-computed values."""

import pytest

from latlab.encoders import NetBuilder
from latlab.encoders.ir import LazyNetworkGraph
from latlab.encoders.nb201_cell import all_archs, format_arch, parse_arch
from latlab.errors import NetworkReferenceError


def test_conv_shapes_and_counts():
    b = NetBuilder("t", (1, 3, 224, 224))
    y = b.conv(b.input, 64, 7, stride=2, padding=3)
    layer = b.layers[-1]
    assert b.shape(y) == (1, 64, 112, 112)
    assert layer.macs == 64 * 112 * 112 * 3 * 7 * 7
    assert layer.flops == 2 * layer.macs
    assert layer.params == 64 * 3 * 7 * 7
    assert layer.bytes_read == 3 * 224 * 224 * 4
    assert layer.bytes_written == 64 * 112 * 112 * 4
    assert layer.kind == "conv"


def test_depthwise_kind_and_macs():
    b = NetBuilder("t", (1, 32, 56, 56))
    b.dwconv(b.input, 3, stride=2)
    layer = b.layers[-1]
    assert layer.kind == "dwconv"
    assert layer.output_shape == (1, 32, 28, 28)
    assert layer.macs == 32 * 28 * 28 * 9


def test_pool_ceil_mode_matches_pytorch():
    b = NetBuilder("t", (1, 8, 55, 55))
    b.maxpool(b.input, 3, 2, ceil_mode=True)
    assert b.layers[-1].output_shape == (1, 8, 27, 27)
    b2 = NetBuilder("t", (1, 8, 112, 112))
    b2.maxpool(b2.input, 3, 2, ceil_mode=True)
    assert b2.layers[-1].output_shape == (1, 8, 56, 56)


def test_totals_depth_and_unknown_ops():
    b = NetBuilder("t", (1, 3, 32, 32))
    x = b.relu(b.bn(b.conv(b.input, 8, 3)))
    s = b.add(b.conv(x, 8, 3), x)
    b.add_layer("FancyOp", [s], output_shapes=[b.shape(s)])
    g = b.build()
    assert g.totals.depth == 2
    assert g.unknown_ops == ("FancyOp",)
    assert g.layers[-1].known is False
    assert g.totals.params == 8 * 27 + 2 * 8 + 8 * 8 * 9


def test_digest_ignores_names_but_not_structure():
    def net(name, c):
        b = NetBuilder(name, (1, 3, 32, 32))
        b.relu(b.conv(b.input, c, 3))
        return b.build()

    assert net("a", 8).digest == net("b", 8).digest
    assert net("a", 8).digest != net("a", 16).digest


def test_lazy_graph_builds_once():
    calls = []

    def build():
        calls.append(1)
        b = NetBuilder("x", (1, 3, 8, 8))
        b.relu(b.input)
        return b.build()

    g = LazyNetworkGraph("x", build, meta={"reference": "x"})
    assert g.reference == "x" and not calls
    assert len(g.layers) == 1 and g.totals.n_layers == 1
    assert len(calls) == 1


def test_nb201_arch_roundtrip_and_errors():
    archs = all_archs()
    assert len(archs) == 15625 and len(set(archs)) == 15625
    for a in archs[::997]:
        assert format_arch(parse_arch(a)) == a
    with pytest.raises(NetworkReferenceError, match="conv_9x9"):
        parse_arch("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(NetworkReferenceError, match="node 2"):
        parse_arch("|none~0|+|none~0|+|none~0|none~1|none~2|")
