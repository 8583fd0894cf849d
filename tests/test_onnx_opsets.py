"""ONNX import across opsets 7-21: the ops of classic CNNs in every form their opsets use.

Files of the classic ONNX model zoo (AlexNet, GoogLeNet, SqueezeNet, VGG, ... at opsets 7-9)
carry old operator forms: BatchNormalization with ``spatial``, Dropout with its mask output,
Upsample, Pad/Clip/Slice/Squeeze/Split/ReduceMean with attributes instead of inputs, and
initializers listed as graph inputs. One classic CNN, written with onnx.helper in the form each
opset requires, must import to the same IR counts at every opset, with every layer's shape equal
to onnxruntime's.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, version_converter

from latlab.cli import main
from latlab.encoders.onnx_export import to_onnx
from latlab.encoders.onnx_import import from_onnx
from latlab.errors import OnnxImportError

F = TensorProto.FLOAT
OPSETS = range(7, 22)
IR_VERSION = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8}

#: Ops of the classic CNN, in order (the IR keeps one layer per node).
OPS = [
    "Conv",
    "BatchNormalization",
    "Relu",
    "MaxPool",
    "LRN",
    "Conv",
    "LeakyRelu",
    "PRelu",
    "Dropout",
    "Pad",
    "AveragePool",
    "Clip",
    "{up}",
    "Slice",
    "Concat",
    "Add",
    "Mul",
    "Sum",
    "Split",
    "Add",
    "Identity",
    "ReduceMean",
    "Mul",
    "GlobalAveragePool",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Gemm",
    "Reshape",
    "Transpose",
    "MatMul",
    "Softmax",
]

# By hand: conv1 8x31x31 outputs x 27 MACs; conv2 (after a 3x3/2 pool: 15x15) 16x15x15 x 72;
# Gemm 16 -> 24; MatMul (6x4)(4x10).
MACS = 8 * 31 * 31 * 27 + 16 * 15 * 15 * 72 + 16 * 24 + 6 * 4 * 10
# conv1 w+b, BN scale/shift, PRelu slope, conv2, the Add's per-channel bias, Gemm w+b, MatMul w
# (the scalar 0.5 of the Mul is a constant, not a parameter).
PARAMS = (8 * 27 + 8) + 2 * 8 + 16 + 16 * 72 + 32 + (24 * 16 + 24) + 40


def classic_cnn(opset: int) -> onnx.ModelProto:
    """A small classic CNN with every op of the classic zoo, in ``opset``'s operator forms.

    Input (1, 3, 31, 31); output (1, 6, 10). The same network at every opset.
    """
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, *shape: int) -> str:
        arr = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def floats(name: str, values: object) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values, np.float32), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], **attrs: object) -> str:
        nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}_{len(nodes)}", **attrs))
        return outs[0]

    pool = {"ceil_mode": 1} if opset >= 10 else {}  # changes nothing here: the windows fit
    x = node(
        "Conv",
        ["x", weight("c1w", 8, 3, 3, 3), weight("c1b", 8)],
        ["c1"],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    bn = [weight("bs", 8), weight("bb", 8), weight("bm", 8), floats("bv", np.ones(8))]
    x = node(
        "BatchNormalization",
        [x, *bn],
        ["bn"],
        epsilon=1e-5,
        **({"spatial": 1} if opset < 9 else {}),
    )
    x = node("Relu", [x], ["r1"])
    x = node("MaxPool", [x], ["mp"], kernel_shape=[3, 3], strides=[2, 2], **pool)
    x = node("LRN", [x], ["lrn"], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = node(
        "Conv", [x, weight("c2w", 16, 8, 3, 3)], ["c2"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"
    )
    x = node("LeakyRelu", [x], ["lr"], alpha=0.1)
    x = node("PRelu", [x, weight("slope", 16, 1, 1)], ["pr"])
    # The mask output nothing reads: onnx infers no shape for it before opset 10.
    x = node("Dropout", [x], ["dr", "drmask"], **({"ratio": 0.5} if opset < 12 else {}))
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    if opset < 11:
        x = node("Pad", [x], ["pad"], pads=pads, mode="constant", value=0.0)
    else:
        x = node("Pad", [x, ints("pads", pads)], ["pad"], mode="constant")
    x = node(
        "AveragePool",
        [x],
        ["ap"],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
        **pool,
    )
    if opset < 11:
        x = node("Clip", [x], ["clip"], min=0.0, max=6.0)
    else:
        x = node("Clip", [x, floats("lo", 0.0), floats("hi", 6.0)], ["clip"])
    scales = [1.0, 1.0, 2.0, 2.0]
    if opset < 9:
        up = node("Upsample", [x], ["up"], mode="nearest", scales=scales)
    elif opset == 9:
        up = node("Upsample", [x, floats("usc", scales)], ["up"], mode="nearest")
    elif opset == 10:
        up = node("Resize", [x, floats("usc", scales)], ["up"], mode="nearest")
    elif opset < 13:
        up = node("Resize", [x, floats("roi", []), floats("usc", scales)], ["up"], mode="nearest")
    else:
        up = node("Resize", [x, "", "", ints("usz", [1, 16, 18, 18])], ["up"], mode="linear")
    if opset < 10:
        sl = node("Slice", [up], ["sl"], starts=[0, 0], ends=[9, 9], axes=[2, 3])
    else:
        sl = node("Slice", [up, ints("st", [0, 0]), ints("en", [9, 9]), ints("ax", [2, 3])], ["sl"])
    cat = node("Concat", [x, sl], ["cat"], axis=1)  # (1, 32, 9, 9)
    a = node("Add", [cat, weight("addb", 32, 1, 1)], ["add"])
    m = node("Mul", [a, floats("half", 0.5)], ["mul"])
    s = node("Sum", [m, cat, a], ["sum"])
    if opset < 13:
        node("Split", [s], ["s1", "s2"], axis=1, split=[16, 16])
    elif opset < 18:
        node("Split", [s, ints("spl", [16, 16])], ["s1", "s2"], axis=1)
    else:
        node("Split", [s], ["s1", "s2"], axis=1, num_outputs=2)
    x = node("Add", ["s1", "s2"], ["add2"])
    x = node("Identity", [x], ["idn"])
    if opset < 18:
        rm = node("ReduceMean", [x], ["rm"], axes=[1], keepdims=1)
    else:
        rm = node("ReduceMean", [x, ints("rmax", [1])], ["rm"], keepdims=1)
    x = node("Mul", [x, rm], ["gate"])
    g = node("GlobalAveragePool", [x], ["gap"])
    if opset < 13:
        q = node("Squeeze", [g], ["sq"], axes=[2, 3])
        q = node("Unsqueeze", [q], ["usq"], axes=[2])
    else:
        q = node("Squeeze", [g, ints("sqax", [2, 3])], ["sq"])
        q = node("Unsqueeze", [q, ints("usqax", [2])], ["usq"])
    f = node("Flatten", [q], ["flat"], axis=1)
    y = node("Gemm", [f, weight("fcw", 24, 16), weight("fcb", 24)], ["fc"], transB=1)
    y = node("Reshape", [y, ints("rshape", [1, 4, 6])], ["rs"])
    y = node("Transpose", [y], ["tr"], perm=[0, 2, 1])
    y = node("MatMul", [y, weight("mmw", 4, 10)], ["mm"])
    node("Softmax", [y], ["y"], axis=-1 if opset >= 13 else 2)
    inputs = [helper.make_tensor_value_info("x", F, [1, 3, 31, 31])]
    ir = IR_VERSION.get(opset, 10 if opset >= 21 else 9)
    if ir < 4:  # as in the classic zoo's files: initializers are listed as graph inputs too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(
        nodes, f"classic{opset}", inputs, [helper.make_tensor_value_info("y", F, [1, 6, 10])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model)
    return model


def ort_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes onnxruntime gives ``names`` (every tensor made a graph output)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": np.ones((1, 3, 31, 31), np.float32)})
    return {n: tuple(o.shape) for n, o in zip(names, outs, strict=True)}


def up_op(opset: int) -> str:
    return "Upsample" if opset < 10 else "Resize"


@pytest.mark.parametrize("opset", OPSETS)
def test_classic_cnn_imports_at_every_opset_with_onnxruntime_shapes(opset):
    m = classic_cnn(opset)
    g = from_onnx(m)
    assert [la.op for la in g.layers] == [op.format(up=up_op(opset)) for op in OPS]
    assert g.totals.macs == MACS and g.totals.params == PARAMS, opset
    assert g.unknown_ops == () and g.outputs == ["y"] and g.meta["opset"] == opset
    drop = g.layers[OPS.index("Dropout")]
    assert drop.output_shape == (1, 16, 15, 15)
    assert drop.output_shapes[1:] in ((), ((1, 16, 15, 15),))  # the mask: its input's shape
    names = [t for la in g.layers for t in la.outputs]
    ort_of = ort_shapes(m, names)
    ir_of = {t: s for la in g.layers for t, s in zip(la.outputs, la.output_shapes, strict=True)}
    assert ir_of == ort_of
    by = {la.op: la for la in g.layers}
    assert by["Pad"].attrs["pads"] == (0, 0, 1, 1, 0, 0, 1, 1)
    assert by["Clip"].attrs["min"] == 0.0 and by["Clip"].attrs["max"] == 6.0
    assert by["Slice"].attrs["starts"] == (0, 0) and by["Slice"].attrs["axes"] == (2, 3)
    assert by["Split"].attrs["split"] == (16, 16)
    assert by["ReduceMean"].attrs["axes"] == (1,) and by["ReduceMean"].output_shape == (
        1,
        1,
        9,
        9,
    )
    assert by["Squeeze"].output_shape == (1, 16) and by["Unsqueeze"].output_shape == (1, 16, 1)
    assert by[up_op(opset)].output_shape == (1, 16, 18, 18)
    assert by["AveragePool"].output_shape == (1, 16, 9, 9)


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 18, 21])
def test_imported_old_files_export_and_run(opset):
    g = from_onnx(classic_cnn(opset))
    exported = to_onnx(g)
    sess = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.ones((1, 3, 31, 31), np.float32)})
    assert y.shape == (1, 6, 10)
    assert np.allclose(y.sum(-1), 1.0, atol=1e-5)  # Softmax over the last axis
    assert from_onnx(exported).totals.macs == MACS


@pytest.mark.parametrize(("source", "target"), [(9, 13), (9, 18), (11, 21)])
def test_version_converted_files_import_to_the_same_counts(source, target):
    m = version_converter.convert_version(classic_cnn(source), target)
    g = from_onnx(m)
    assert g.meta["opset"] == target
    assert (g.totals.macs, g.totals.params) == (MACS, PARAMS)


def test_unused_outputs_of_unknown_shape_are_dropped_not_fatal():
    # MaxPool's Indices and a custom op's auxiliary output are read by nothing; only the
    # custom op's main output has a shape (from the file's value_info).
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Aux", ["p"], ["a", "aux"], domain="com.example", name="aux_node"),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", F, [1, 4, 4, 4])],
        value_info=[helper.make_tensor_value_info("a", F, [1, 4, 4, 4])],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 8), helper.make_opsetid("com.example", 1)]
    )
    g = from_onnx(m)
    pool, aux, relu = g.layers
    assert pool.output_shapes == ((1, 4, 4, 4), (1, 4, 4, 4))
    assert aux.outputs == ("a",) and not aux.known
    assert relu.output_shape == (1, 4, 4, 4) and g.outputs == ["y"]


def _bad_model(kind: str, opset: int = 9) -> onnx.ModelProto:
    zeros = {
        "conv": ("w", (4, 5, 3, 3)),
        "gemm": ("w", (10, 99)),
    }
    x = helper.make_tensor_value_info("x", F, [1, 3, 8, 8])
    if kind == "reshape":
        nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")]
        inits = [numpy_helper.from_array(np.asarray([7, 7], np.int64), "s")]
    elif kind == "conv":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], name="bad_conv")]
        inits = [numpy_helper.from_array(np.zeros(zeros["conv"][1], np.float32), "w")]
    else:
        nodes = [
            helper.make_node("Flatten", ["x"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "w"], ["g"], transB=1, name="bad_fc"),
            helper.make_node("Relu", ["g"], ["y"], name="relu"),
        ]
        inits = [numpy_helper.from_array(np.zeros(zeros["gemm"][1], np.float32), "w")]
    graph = helper.make_graph(
        nodes, "bad", [x], [helper.make_tensor_value_info("y", F, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("reshape", r"node 'bad_reshape' \(Reshape\): target shape \(7, 7\) has 49 elements"),
        ("conv", r"node 'bad_conv' \(Conv\): weight \(4, 5, 3, 3\).*expects 5 input channels"),
        ("gemm", r"node 'bad_fc' \(Gemm\): operands \(1, 192\) and \(10, 99\) do not multiply"),
        # at opset 13 onnx's inference leaves the output without a shape; its reason is kept
        ("gemm13", r"tensor 'g' \(output of node 'bad_fc', op Gemm\).*Dimension mismatch.*99"),
    ],
)
def test_files_that_cannot_be_imported_name_the_node_and_the_reason(kind, message):
    with pytest.raises(OnnxImportError, match=message) as info:
        from_onnx(_bad_model(kind.removesuffix("13"), 13 if kind.endswith("13") else 9))
    assert "\n" not in str(info.value)


def test_cli_encode_of_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    onnx.save(_bad_model("conv"), str(path))
    with pytest.raises(SystemExit) as exc:
        main(["encode", f"onnx:{path}"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad_conv" in lines[0] and "input channels" in lines[0]
    assert out == ""
    good = tmp_path / "classic7.onnx"
    onnx.save(classic_cnn(7), str(good))
    with pytest.raises(SystemExit) as ok:
        main(["encode", f"onnx:{good}", "--json"])
    assert ok.value.code in (0, None)
    assert f'"macs": {MACS}' in capsys.readouterr().out


def test_batchnorm_statistics_outputs_of_old_opsets_and_a_mask_graph_output():
    # BatchNormalization-7/9 may list its training statistics (running and saved mean/var),
    # which nothing reads and onnx gives no shape: dropped. A Dropout mask that is a graph
    # output keeps its (the input's) shape.
    stats = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("s", "b", "m", "v")]
    x = helper.make_tensor_value_info("x", F, [1, 4, 3, 3])
    for opset in (7, 9):
        bn = helper.make_node(
            "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "mo", "vo", "sm", "sv"]
        )
        graph = helper.make_graph(
            [bn], "bn", [x], [helper.make_tensor_value_info("y", F, [1, 4, 3, 3])], stats
        )
        g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
        assert g.layers[0].outputs == ("y",) and g.totals.params == 8
    drop = helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.5)
    outs = [
        helper.make_tensor_value_info("y", F, [1, 4, 3, 3]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, None),
    ]
    graph = helper.make_graph([drop], "drop", [x], outs)
    g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)]))
    assert g.outputs == ["y", "mask"] and g.layers[0].output_shapes[1] == (1, 4, 3, 3)
