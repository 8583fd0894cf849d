"""IR -> ONNX export: every NetBuilder op runs in onnxruntime with the IR's shapes, and
random networks survive the round trip IR -> ONNX -> IR with identical counts."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from latlab.encoders import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.encoders.onnx_export import to_onnx
from latlab.encoders.onnx_import import from_onnx

LAYER_FIELDS = (
    "op",
    "input_shapes",
    "output_shapes",
    "weight_shapes",
    "kind",
    "known",
    "macs",
    "flops",
    "params",
    "bytes_read",
    "bytes_written",
    "weight_bytes",
)


def run_all_outputs(graph: NetworkGraph, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """Run the exported model in onnxruntime and return the shape of every layer output."""
    model = to_onnx(graph, seed=seed)
    # not full_check: onnx's own shape inference keeps ceil-mode pooling windows that start in
    # the end padding, which onnxruntime (and PyTorch) drop; the IR follows the runtime.
    onnx.checker.check_model(model)
    declared = {o.name for o in model.graph.output}
    for layer in graph.layers:
        for t in layer.outputs:
            if t not in declared:
                model.graph.output.append(helper.make_empty_tensor_value_info(t))
                declared.add(t)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in graph.inputs.items()}
    names = [o.name for o in sess.get_outputs()]
    return {n: tuple(v.shape) for n, v in zip(names, sess.run(names, feeds), strict=True)}


def assert_shapes_match(graph: NetworkGraph) -> None:
    shapes = run_all_outputs(graph)
    for layer in graph.layers:
        for t, s in zip(layer.outputs, layer.output_shapes, strict=True):
            assert shapes[t] == s, f"{layer.name} ({layer.op}): onnxruntime {shapes[t]}, IR {s}"


def assert_same_ir(a: NetworkGraph, b: NetworkGraph) -> None:
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for f in LAYER_FIELDS:
            assert getattr(la, f) == getattr(lb, f), f"{la.name} ({la.op}): {f} differs"
    assert a.totals == b.totals
    assert a.edges() == b.edges()


# --------------------------------------------------------------------------- every builder op

X = (2, 8, 13, 11)


def _ops(b: NetBuilder) -> None:
    x = b.input
    y = b.conv(x, 12, 3, 2, bias=True, dilation=2)
    y = b.conv(y, 16, (3, 1), 1, padding=(1, 0), groups=4)
    y = b.dwconv(y, 5, 2)
    y = b.relu(b.bn(y))
    y = b.relu6(b.lrn(y, 3))
    y = b.sigmoid(b.hardswish(b.hardsigmoid(b.swish(y))))
    for op in ("Tanh", "Elu", "Softplus", "Abs", "Neg", "Sign", "LeakyRelu", "Exp", "Erf"):
        y = b.act(y, op)
    y = b.act(y, "Selu", alpha=1.5, gamma=1.1)
    z = b.maxpool(x, 3, 2, ceil_mode=True)
    z = b.avgpool(z, 3, 2, padding=1, ceil_mode=True, count_include_pad=True)
    z = b.maxpool(z, 2, 1, padding=1)
    a, c = b.split(z, (3, 5))
    z = b.concat([c, a])
    z = b.slice(z, (1, 0), (7, 100), (1, 3), (2, 1))
    z = b.pad(z, (0, 0, 1, 0, 0, 0, 0, 1), mode="reflect")
    z = b.resize(z, 2.0)
    z = b.resize(z, 0.5, mode="linear")
    z = b.channel_shuffle(b.conv(z, 16, 1), 4)
    z = b.transpose(b.transpose(z, (0, 2, 3, 1)), (0, 3, 1, 2))
    z = b.softmax(b.mul(b.add(z, z), z), axis=1)
    p = b.add(b.global_avgpool(y), b.global_maxpool(z))
    f = b.flatten(p)
    h = b.gemm(b.relu(b.gemm(f, 20)), 10, bias=False)
    r = b.reshape(h, (2, 2, 5))
    m = b.matmul(r, 3)
    b.softmax(m)


def test_every_builder_op_exports_and_runs_with_the_ir_shapes():
    b = NetBuilder("all-ops", X)
    _ops(b)
    g = b.build()
    assert g.unknown_ops == ()
    assert_shapes_match(g)
    assert_same_ir(g, from_onnx(to_onnx(g)))


@pytest.mark.parametrize(
    ("op", "attrs", "weights", "opset"),
    [
        ("Gelu", {}, [], 20),
        ("Mish", {}, [], 18),
        ("Swish", {}, [], 24),
        ("PRelu", {}, [(8, 1, 1)], 17),
        ("Add", {}, [(8, 1, 1)], 17),
        ("Pow", {}, [(1, 8, 1, 1)], 17),
        ("Clip", {"min": 0.0}, [], 17),
        ("LayerNormalization", {"axis": -1, "epsilon": 1e-5}, [(11,), (11,)], 17),
        ("InstanceNormalization", {"epsilon": 1e-5}, [(8,), (8,)], 17),
        ("ReduceMean", {"axes": (2, 3), "keepdims": 1}, [], 17),
        ("ReduceSum", {"axes": (1,), "keepdims": 0}, [], 17),
        ("LpPool", {"kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0), "p": 2}, [], 17),
        ("Dropout", {}, [], 17),
        ("Identity", {}, [], 17),
        ("Concat", {}, [], 17),  # no axis: the IR default (1) is written
    ],
)
def test_add_layer_ops_export(op, attrs, weights, opset):
    b = NetBuilder(op, X)
    inputs = [b.input, b.input] if op == "Concat" else [b.input]
    b.add_layer(op, inputs, attrs, weights)
    g = b.build()
    model = to_onnx(g)
    assert model.opset_import[0].version == opset  # raised only for ops that need it
    assert_shapes_match(g)
    assert_same_ir(g, from_onnx(model))


def test_conv_transpose_and_upsample_export():
    b = NetBuilder("t", X)
    attrs = {"kernel": (3, 3), "stride": (2, 2), "pads": (1, 1, 1, 1), "output_padding": (1, 1)}
    y = b.add_layer("ConvTranspose", [b.input], {**attrs, "groups": 2}, [(8, 3, 3, 3)])[0]
    assert b.shape(y) == (2, 6, 26, 22)
    b.add_layer("Upsample", [y], {"scales": (1.0, 1.0, 2.0, 2.0), "mode": "nearest"})
    g = b.build()
    assert_shapes_match(g)
    back = from_onnx(to_onnx(g))
    assert back.layers[0].macs == g.layers[0].macs == 2 * 8 * 13 * 11 * 3 * 9
    assert back.layers[1].op == "Resize"  # Upsample is deprecated: exported as Resize
    assert back.layers[1].output_shape == (2, 6, 52, 44)


def test_reduce_axes_follow_the_opset():
    b = NetBuilder("t", X)
    b.add_layer("ReduceMean", [b.input], {"axes": (2, 3), "keepdims": 0})
    g = b.build()
    old, new = to_onnx(g, opset=17), to_onnx(g, opset=18)
    assert len(old.graph.node[0].input) == 1 and len(new.graph.node[0].input) == 2
    for m in (old, new):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": np.ones(X, np.float32)})
        assert y.shape == (2, 8)


def test_unexportable_op_raises_naming_it():
    b = NetBuilder("t", (1, 4))
    b.add_layer("FancyOp", [b.input], output_shapes=[(1, 4)])
    with pytest.raises(KeyError, match="FancyOp"):
        to_onnx(b.build())


def test_weights_are_seeded():
    b = NetBuilder("t", (1, 3, 8, 8))
    b.conv(b.input, 4, 3)
    g = b.build()
    w0 = onnx.numpy_helper.to_array(to_onnx(g, seed=1).graph.initializer[0])
    w1 = onnx.numpy_helper.to_array(to_onnx(g, seed=1).graph.initializer[0])
    w2 = onnx.numpy_helper.to_array(to_onnx(g, seed=2).graph.initializer[0])
    assert np.array_equal(w0, w1) and not np.array_equal(w0, w2)
    assert np.count_nonzero(w0) == w0.size


# --------------------------------------------------------------------------- round trip property


@st.composite
def networks(draw) -> NetworkGraph:
    """Small random CNNs from the builder's vocabulary, with branches and a head."""
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 8))
    h = draw(st.integers(4, 12))
    wd = draw(st.integers(4, 12))
    b = NetBuilder("random", (n, c, h, wd))
    x = b.input
    for _ in range(draw(st.integers(1, 7))):
        n, c, h, wd = b.shape(x)
        op = draw(
            st.sampled_from(
                [
                    "conv", "dwconv", "bn", "act", "pool", "add", "mul", "concat", "split",
                    "slice", "pad", "resize", "shuffle", "transpose", "softmax", "lrn",
                ]
            )
        )  # fmt: skip
        if op == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0]))
            out = groups * draw(st.integers(1, 4))
            k = draw(st.sampled_from([1, 3]))
            s = draw(st.sampled_from([1, 2]))
            x = b.conv(x, out, k, s, groups=groups, bias=draw(st.booleans()))
        elif op == "dwconv":
            x = b.dwconv(x, draw(st.sampled_from([3, 5])), draw(st.sampled_from([1, 2])))
        elif op == "bn":
            x = b.bn(x)
        elif op == "act":
            fn = draw(
                st.sampled_from([b.relu, b.relu6, b.sigmoid, b.hardswish, b.hardsigmoid, b.swish])
            )
            x = fn(x)
        elif op == "pool" and min(h, wd) >= 3:
            k = draw(st.sampled_from([2, 3]))
            stride = draw(st.sampled_from([1, 2]))
            pad = draw(st.integers(0, k // 2))
            ceil = draw(st.booleans())
            if draw(st.booleans()):
                x = b.maxpool(x, k, stride, padding=pad, ceil_mode=ceil)
            else:
                x = b.avgpool(x, k, stride, padding=pad, ceil_mode=ceil)
        elif op in ("add", "mul"):
            branch = b.conv(x, c, 1)
            x = b.add(x, branch) if op == "add" else b.mul(x, b.sigmoid(branch))
        elif op == "concat":
            x = b.concat([x, b.conv(x, draw(st.integers(1, 4)), 3)])
        elif op == "split" and c >= 2:
            first = draw(st.integers(1, c - 1))
            a, rest = b.split(x, (first, c - first))
            x = b.concat([rest, a])
        elif op == "slice" and wd >= 2:
            start = draw(st.integers(0, wd - 2))
            x = b.slice(x, (start,), (wd,), (3,), (draw(st.integers(1, 2)),))
        elif op == "pad":
            pads = draw(st.lists(st.integers(0, 2), min_size=2, max_size=2))
            x = b.pad(x, (0, 0, pads[0], 0, 0, 0, 0, pads[1]))
        elif op == "resize" and max(h, wd) <= 10:
            x = b.resize(x, 2.0, mode=draw(st.sampled_from(["nearest", "linear"])))
        elif op == "shuffle" and c % 2 == 0:
            x = b.channel_shuffle(x, 2)
        elif op == "transpose":
            x = b.transpose(x, (0, 1, 3, 2))
        elif op == "softmax":
            x = b.softmax(x, axis=1)
        elif op == "lrn":
            x = b.lrn(x, draw(st.sampled_from([3, 5])))
    if draw(st.booleans()):
        x = b.flatten(b.global_avgpool(x))
        x = b.gemm(x, draw(st.integers(1, 10)))
    elif not b.layers:
        x = b.relu(x)
    return b.build()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_round_trip_preserves_layers_and_totals(graph):
    model = to_onnx(graph)
    back = from_onnx(model)
    assert_same_ir(graph, back)
    assert back.inputs == graph.inputs and back.outputs == graph.outputs
    assert_shapes_match(graph)


def test_gather_of_a_scalar_index_exports_a_scalar():
    # A ViT's class token: Gather(x, 0) on (N, S, D) gives (N, D); the exported indices must
    # be a scalar, or onnxruntime sees a rank-3 tensor and the classifier Gemm fails.
    import onnxruntime as ort

    from latlab.datasets.references import resolve
    from latlab.encoders.onnx_export import to_onnx

    g = resolve("block:vit?d=64&h=2&head=10&img=32&p=8")
    gather = next(la for la in g.layers if la.op == "Gather")
    assert gather.output_shape == (1, 64)
    model = to_onnx(g)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros(g.inputs[next(iter(g.inputs))], dtype=np.float32)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape == (1, 10)
