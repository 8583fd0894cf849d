"""ONNX import: real-world-style files built with onnx.helper, golden numbers by hand."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from latlab.datasets.references import onnx_model, parse_reference, resolve
from latlab.encoders.onnx_import import from_onnx, load_runnable, resolve_auto_pad
from latlab.errors import NetworkReferenceError, OnnxImportError

F = TensorProto.FLOAT


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def w(name, *shape, seed=0):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def model(nodes, inputs, outputs, inits=(), opset=17, value_info=(), domains=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    ops = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    return m


def run_ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def by_op(graph, op):
    return [layer for layer in graph.layers if layer.op == op]


# --------------------------------------------------------------------------- weights


def test_constant_of_shape_weights_are_weights_not_layers():
    # A conv whose weight and bias are produced at run time by ConstantOfShape: the weights
    # are not stored, only their shapes matter.
    nodes = [
        helper.make_node("Constant", [], ["wshape"], value=ints("v", [16, 3, 3, 3])),
        helper.make_node(
            "ConstantOfShape",
            ["wshape"],
            ["W"],
            value=numpy_helper.from_array(np.array([0.1], np.float32)),
        ),
        helper.make_node("ConstantOfShape", ["bshape"], ["B"]),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    m = model(
        nodes,
        [vi("x", [1, 3, 32, 32])],
        [vi("z", None)],
        inits=[ints("bshape", [16])],
    )
    g = from_onnx(m)
    assert [layer.op for layer in g.layers] == ["Conv", "Relu"]
    conv = g.layers[0]
    assert conv.weight_shapes == ((16, 3, 3, 3), (16,))
    assert conv.output_shape == (1, 16, 16, 16)
    assert conv.macs == 16 * 16 * 16 * (3 * 3 * 3)
    assert conv.flops == 2 * conv.macs + 16 * 16 * 16
    assert conv.params == 16 * 27 + 16
    assert conv.attrs["pads"] == (1, 1, 1, 1) and conv.attrs["stride"] == (2, 2)
    assert g.totals.params == 16 * 27 + 16
    assert g.unknown_ops == ()
    # and the file runs as it is
    (z,) = run_ort(m, {"x": np.ones((1, 3, 32, 32), np.float32)})
    assert z.shape == conv.output_shape


def small_cnn(opset=17):
    """conv(bias) -> BN -> relu -> gap -> flatten -> gemm, with real weights."""
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [
        w("cw", 8, 3, 3, 3),
        w("cb", 8),
        w("s", 8),
        w("b", 8),
        w("m", 8),
        floats("v", np.ones(8)),
        w("fw", 10, 8),
        w("fb", 10),
    ]
    return model(nodes, [vi("x", ["N", 3, 16, 16])], [vi("y", ["N", 10])], inits, opset)


SMALL_CNN_MACS = 8 * 16 * 16 * 27 + 10 * 8
SMALL_CNN_PARAMS = 8 * 27 + 8 + 2 * 8 + 10 * 8 + 10


def test_model_saved_without_its_weights(tmp_path):
    full = small_cnn()
    path = tmp_path / "net.onnx"
    onnx.save(
        full,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="net.weights",
        size_threshold=0,
    )
    (tmp_path / "net.weights").unlink()  # the weights were not shipped
    g = from_onnx(path, input_shape=(2, 3, 16, 16))
    assert g.totals.macs == 2 * SMALL_CNN_MACS
    assert g.totals.params == SMALL_CNN_PARAMS
    assert g.name == "net" and g.reference == f"onnx:{path}" and g.family == "onnx"
    # The runnable model gets seeded stand-in weights and runs with the requested batch.
    runnable = load_runnable(path, (2, 3, 16, 16))
    (y,) = run_ort(runnable, {"x": np.ones((2, 3, 16, 16), np.float32)})
    assert y.shape == (2, 10)


def test_external_weights_present_are_loaded_for_running(tmp_path):
    full = small_cnn()
    path = tmp_path / "net.onnx"
    copy = onnx.ModelProto.FromString(full.SerializeToString())  # onnx.save moves its data out
    onnx.save(copy, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    runnable = onnx_model(f"onnx:{path}", batch=3)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    (expected,) = run_ort(full, {"x": x})
    (y,) = run_ort(runnable, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert [d.dim_value for d in runnable.graph.input[0].type.tensor_type.shape.dim] == [
        3,
        3,
        16,
        16,
    ]


def test_batchnorm_folded_or_not():
    unfolded = from_onnx(small_cnn())
    assert [layer.kind for layer in unfolded.layers] == [
        "conv",
        "norm",
        "act",
        "gpool",
        "data",
        "fc",
    ]
    bn = by_op(unfolded, "BatchNormalization")[0]
    assert bn.params == 16 and bn.weight_shapes == ((8,),) * 4
    assert bn.flops == 2 * 8 * 16 * 16
    # folded: the same network without the BN node
    m = small_cnn()
    del m.graph.node[1]
    m.graph.node[1].input[0] = "c"
    folded = from_onnx(m)
    assert folded.totals.params == unfolded.totals.params - 16
    assert folded.totals.macs == unfolded.totals.macs == SMALL_CNN_MACS


def test_initializers_listed_as_inputs_are_weights():
    # IR version 3 files list every initializer among the graph inputs too.
    m = small_cnn()
    for t in m.graph.initializer:
        m.graph.input.append(vi(t.name, list(t.dims)))
    g = from_onnx(m)
    assert list(g.inputs) == ["x"]
    assert g.totals.params == SMALL_CNN_PARAMS


def test_weight_producing_subgraphs_and_quantized_weights():
    # Transpose(initializer) -> MatMul, Identity(initializer) -> Add, int8 DequantizeLinear -> Conv
    q = numpy_helper.from_array(np.ones((4, 2, 1, 1), np.int8), "qw")
    nodes = [
        helper.make_node("DequantizeLinear", ["qw", "qs", "qz"], ["cw"]),
        helper.make_node("Conv", ["x", "cw"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Transpose", ["mw"], ["mwt"], perm=[1, 0]),
        helper.make_node("MatMul", ["f", "mwt"], ["mm"]),
        helper.make_node("Identity", ["bias"], ["bias2"]),
        helper.make_node("Add", ["mm", "bias2"], ["y"]),
    ]
    inits = [
        q,
        floats("qs", 0.5),
        numpy_helper.from_array(np.int8(0), "qz"),
        w("mw", 6, 36),
        w("bias", 6),
    ]
    g = from_onnx(model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", None)], inits))
    assert [layer.op for layer in g.layers] == ["Conv", "Flatten", "MatMul", "Add"]
    conv, _, mm, add = g.layers
    assert conv.weight_bits == 8 and conv.weight_bytes == 4 * 2
    assert conv.macs == 4 * 9 * 2
    assert mm.weight_shapes == ((36, 6),) and mm.macs == 36 * 6 and mm.weight_bits == 32
    assert add.weight_shapes == ((6,),)
    assert g.totals.params == 8 + 36 * 6 + 6


# --------------------------------------------------------------------------- op coverage


def test_conv_variants_grouped_depthwise_auto_pad_and_concat_branches():
    nodes = [
        # grouped 3x3, SAME_UPPER at stride 2 on 15x15 -> 8x8, total pad 2 -> (1, 1)
        helper.make_node(
            "Conv", ["x", "gw"], ["g"], group=4, strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        # depthwise 3x3 SAME_LOWER, stride 2 on 15 -> 8 (odd total pad: begin gets the extra)
        helper.make_node(
            "Conv",
            ["x", "dw"],
            ["d"],
            group=8,
            strides=[2, 2],
            kernel_shape=[4, 4],
            auto_pad="SAME_LOWER",
        ),
        # 1x1 VALID branch with dilation
        helper.make_node("Conv", ["x", "pw"], ["p"], strides=[2, 2], auto_pad="VALID"),
        helper.make_node("Concat", ["g", "d", "p"], ["cat"], axis=1),
        helper.make_node(
            "MaxPool", ["cat"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
    ]
    inits = [w("gw", 16, 2, 3, 3), w("dw", 8, 1, 4, 4), w("pw", 4, 8, 1, 1)]
    m = model(nodes, [vi("x", [1, 8, 15, 15])], [vi("mp", None)], inits)
    g = from_onnx(m)
    gconv, dconv, pconv, cat, mp = g.layers
    assert gconv.kind == "conv" and gconv.attrs["groups"] == 4
    assert gconv.attrs["pads"] == (1, 1, 1, 1) and gconv.output_shape == (1, 16, 8, 8)
    assert gconv.macs == 16 * 8 * 8 * 2 * 9
    assert dconv.kind == "dwconv" and dconv.macs == 8 * 8 * 8 * 16
    # in 15, out 8, stride 2, kernel 4: total pad = 7*2 + 4 - 15 = 3 -> lower: begin 2, end 1
    assert dconv.attrs["pads"] == (2, 2, 1, 1)
    assert pconv.attrs["pads"] == (0, 0, 0, 0) and pconv.output_shape == (1, 4, 8, 8)
    assert cat.output_shape == (1, 28, 8, 8) and cat.kind == "concat" and cat.flops == 0
    assert cat.bytes_read == 4 * (16 + 8 + 4) * 64
    assert mp.output_shape == (1, 28, 4, 4) and mp.attrs["pads"] == (0, 0, 1, 1)
    assert mp.flops == 28 * 16 * 9
    assert g.totals.depth == 1
    outs = run_ort(m, {"x": np.ones((1, 8, 15, 15), np.float32)})
    assert outs[0].shape == mp.output_shape


def test_resolve_auto_pad_matches_formula():
    assert resolve_auto_pad("SAME_UPPER", (224,), (7,), (2,), (1,)) == (2, 3)
    assert resolve_auto_pad("SAME_LOWER", (224,), (7,), (2,), (1,)) == (3, 2)
    assert resolve_auto_pad("VALID", (9, 9), (3, 3), (1, 1), (1, 1)) == (0, 0, 0, 0)


def test_lrn_softmax_gemm_matmul_reshape_transpose():
    nodes = [
        helper.make_node("LRN", ["x"], ["l"], size=5, alpha=1e-4, beta=0.75),
        helper.make_node(
            "Reshape", ["l", "shape"], ["r"]
        ),  # (2, 6, 4, 5) -> (2, 0, 20) -> (2, 6, 20)
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),  # (2, 20, 6)
        helper.make_node("MatMul", ["t", "r"], ["att"]),  # (2, 20, 6) @ (2, 6, 20) -> (2, 20, 20)
        helper.make_node("Softmax", ["att"], ["sm"], axis=-1),
        helper.make_node("Flatten", ["sm"], ["f"], axis=1),  # (2, 400)
        helper.make_node(
            "Gemm", ["wt", "f"], ["y"], transA=1, transB=1
        ),  # wt (400, 7)ᵀ·fᵀ -> (7, 2)
    ]
    m = model(
        nodes,
        [vi("x", [2, 6, 4, 5])],
        [vi("y", None)],
        [ints("shape", [2, 0, -1]), w("wt", 400, 7)],
    )
    g = from_onnx(m)
    lrn, rs, tr, mm, sm, fl, gemm = g.layers
    assert lrn.kind == "norm" and lrn.attrs["size"] == 5 and lrn.flops == 2 * 6 * 4 * 5 * 8
    assert rs.attrs["shape"] == (2, 0, -1) and rs.output_shape == (2, 6, 20)
    assert tr.attrs["perm"] == (0, 2, 1) and tr.output_shape == (2, 20, 6)
    assert mm.inputs == ("t", "r") and mm.weight_shapes == ()
    assert mm.macs == 2 * 20 * 20 * 6 and mm.params == 0
    assert sm.kind == "softmax" and sm.flops == 3 * 2 * 400
    assert fl.output_shape == (2, 400)
    # the activation is Gemm's second input here; the weight is its first (transposed)
    assert gemm.weight_shapes == ((400, 7),) and gemm.output_shape == (7, 2)
    assert gemm.attrs["transA"] == 1 and gemm.params == 2800
    (y,) = run_ort(m, {"x": np.ones((2, 6, 4, 5), np.float32)})
    assert y.shape == gemm.output_shape


def test_resize_pad_slice_clip_in_all_their_opset_forms():
    x = vi("x", [1, 4, 6, 8])
    cases = {
        # opset 13: Resize scales as input, Pad pads as input, Slice as inputs, Clip as inputs
        13: (
            [
                helper.make_node("Resize", ["x", "", "scales"], ["rs"], mode="linear"),
                helper.make_node("Pad", ["rs", "pads"], ["pd"], mode="reflect"),
                helper.make_node("Slice", ["pd", "starts", "ends", "axes", "steps"], ["sl"]),
                helper.make_node("Clip", ["sl", "lo", "hi"], ["y"]),
            ],
            [
                floats("scales", [1, 1, 2, 1.5]),
                ints("pads", [0, 0, 1, 2, 0, 0, 3, 4]),
                ints("starts", [1, -10]),
                ints("ends", [np.iinfo(np.int64).max, 100]),
                ints("axes", [2, 3]),
                ints("steps", [2, 1]),
                floats("lo", 0.0),
                floats("hi", 6.0),
            ],
        ),
        # opset 9/10: Upsample scales as input, Pad pads as attribute, Slice attributes,
        # Clip bounds as attributes
        9: (
            [
                helper.make_node("Upsample", ["x", "scales"], ["rs"], mode="linear"),
                helper.make_node(
                    "Pad", ["rs"], ["pd"], pads=[0, 0, 1, 2, 0, 0, 3, 4], mode="reflect"
                ),
                helper.make_node(
                    "Slice", ["pd"], ["sl"], starts=[1, -10], ends=[1000, 100], axes=[2, 3]
                ),
                helper.make_node("Clip", ["sl"], ["y"], min=0.0, max=6.0),
            ],
            [floats("scales", [1, 1, 2, 1.5])],
        ),
        # opset 18: Resize sizes on chosen axes, Pad with axes
        18: (
            [
                helper.make_node(
                    "Resize", ["x", "", "", "sizes"], ["rs"], axes=[2, 3], mode="linear"
                ),
                helper.make_node("Pad", ["rs", "pads", "", "paxes"], ["pd"], mode="reflect"),
                helper.make_node("Slice", ["pd", "starts", "ends", "axes"], ["sl"]),
                helper.make_node("Clip", ["sl", "", "hi"], ["y"]),
            ],
            [
                ints("sizes", [12, 12]),
                ints("pads", [1, 2, 3, 4]),  # begins of axes 2, 3 then their ends
                ints("paxes", [2, 3]),
                ints("starts", [1, -10]),
                ints("ends", [np.iinfo(np.int64).max, 100]),
                ints("axes", [2, 3]),
                floats("hi", 6.0),
            ],
        ),
    }
    for opset, (nodes, inits) in cases.items():
        m = model(nodes, [x], [vi("y", None)], inits, opset=opset)
        g = from_onnx(m)
        (y,) = run_ort(m, {"x": np.ones((1, 4, 6, 8), np.float32)})
        assert y.shape == g.layers[-1].output_shape, opset
        rs, pd, sl, clip = g.layers
        assert rs.output_shape == (1, 4, 12, 12), opset
        assert rs.kind == "data" and rs.attrs["mode"] == "linear"
        assert rs.flops == 4 * 4 * 12 * 12  # linear: 4 FLOPs per output element
        assert pd.attrs["pads"] == (0, 0, 1, 2, 0, 0, 3, 4), opset
        assert pd.output_shape == (1, 4, 16, 18)
        # rows: every 2nd of 1..15 with steps (opset 13), all 15 without; columns 8..17
        assert sl.output_shape == (1, 4, 8 if opset == 13 else 15, 10), opset
        assert clip.attrs.get("max") == 6.0 and clip.weight_shapes == ()
        assert g.totals.params == 0 and g.unknown_ops == ()


def test_split_dropout_and_multi_output_nodes():
    nodes = [
        helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1),
        helper.make_node("Dropout", ["a"], ["d", "mask"]),
        helper.make_node("Split", ["b"], ["b1", "b2"], axis=1, num_outputs=2),
        helper.make_node("Concat", ["d", "b1", "b2"], ["y"], axis=1),
    ]
    opset18 = model(nodes, [vi("x", [1, 10, 4, 4])], [vi("y", None)], [ints("split", [4, 6])], 18)
    g = from_onnx(opset18)
    s1, drop, s2, cat = g.layers
    assert s1.outputs == ("a", "b") and s1.attrs["split"] == (4, 6)
    assert s1.output_shapes == ((1, 4, 4, 4), (1, 6, 4, 4))
    assert drop.outputs == ("d", "mask") and drop.output_shapes[1] == (1, 4, 4, 4)
    assert s2.attrs["split"] == (3, 3)
    assert cat.output_shape == (1, 10, 4, 4)
    assert g.predecessors(3) == [1, 2, 2]


def test_elementwise_activations_and_global_pooling_counts():
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["sw"]),  # swish
        helper.make_node("HardSwish", ["sw"], ["h"]),
        helper.make_node("Add", ["h", "bias"], ["a"]),  # broadcast bias (C, 1, 1)
        helper.make_node("GlobalMaxPool", ["a"], ["gp"]),
        helper.make_node("ReduceMean", ["a", "axes"], ["rm"], keepdims=0),
        helper.make_node("Sub", ["gp", "rm4"], ["y"]),
        helper.make_node("Unsqueeze", ["rm", "uaxes"], ["rm4"]),
    ]  # deliberately unsorted: Unsqueeze comes after its consumer
    inits = [w("bias", 8, 1, 1), ints("axes", [2, 3]), ints("uaxes", [2, 3])]
    g = from_onnx(model(nodes, [vi("x", [2, 8, 5, 5])], [vi("y", None)], inits, opset=18))
    ops = [layer.op for layer in g.layers]
    assert ops.index("Unsqueeze") < ops.index("Sub")
    n = 2 * 8 * 25
    layer = {layer.op: layer for layer in g.layers}
    assert layer["Sigmoid"].flops == 4 * n
    assert layer["Mul"].flops == n and layer["HardSwish"].flops == 4 * n
    assert layer["Add"].flops == n and layer["Add"].params == 8
    assert layer["GlobalMaxPool"].kind == "gpool" and layer["GlobalMaxPool"].flops == n
    assert layer["ReduceMean"].attrs["axes"] == (2, 3)
    assert layer["ReduceMean"].output_shape == (2, 8)
    assert layer["Sub"].output_shape == (2, 8, 1, 1)


# --------------------------------------------------------------------------- shapes and errors


def dynamic_model():
    nodes = [helper.make_node("Conv", ["img", "cw"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])]
    return model(
        nodes, [vi("img", ["N", 3, "H", "W"])], [vi("y", ["N", 8, "H", "W"])], [w("cw", 8, 3, 3, 3)]
    )


def test_dynamic_dims_need_an_input_shape():
    with pytest.raises(
        OnnxImportError, match=r"input 'img' has dynamic dimensions 0 \(N\), 2 \(H\), 3 \(W\)"
    ):
        from_onnx(dynamic_model())
    g = from_onnx(dynamic_model(), input_shape=(4, 3, 20, 30))
    assert g.inputs == {"img": (4, 3, 20, 30)}
    assert g.layers[0].macs == 4 * 8 * 20 * 30 * 27
    # a shape without the batch takes the batch option
    g = from_onnx(dynamic_model(), input_shape=(3, 20, 30), batch=2)
    assert g.inputs == {"img": (2, 3, 20, 30)}
    # by name
    assert from_onnx(dynamic_model(), input_shape={"img": (1, 3, 8, 8)}).inputs["img"] == (
        1,
        3,
        8,
        8,
    )


def test_symbolic_batch_defaults_to_batch_and_the_model_is_not_modified():
    m = small_cnn()
    before = m.SerializeToString()
    assert from_onnx(m).inputs == {"x": (1, 3, 16, 16)}
    assert from_onnx(m, batch=8).totals.macs == 8 * SMALL_CNN_MACS
    assert m.SerializeToString() == before


def test_input_shape_errors_name_the_problem():
    with pytest.raises(OnnxImportError, match=r"contradicts the static dimension 1 of input 'img'"):
        from_onnx(dynamic_model(), input_shape=(1, 4, 8, 8))
    with pytest.raises(OnnxImportError, match=r"has rank 2.*rank 4"):
        from_onnx(dynamic_model(), input_shape=(8, 8))
    with pytest.raises(OnnxImportError, match=r"names input 'nope'"):
        from_onnx(dynamic_model(), input_shape={"nope": (1, 3, 8, 8)})


def test_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(OnnxImportError, match=r"ONNX file not found: .*absent\.onnx"):
        from_onnx(missing)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(small_cnn().SerializeToString()[:200])
    with pytest.raises(OnnxImportError, match=r"corrupt.*corrupt\.onnx"):
        from_onnx(corrupt)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxImportError, match=r"ONNX file .*empty\.onnx: the file is empty"):
        from_onnx(empty)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(OnnxImportError, match=r"text\.onnx"):
        from_onnx(text)


def test_unknown_custom_op_is_kept_and_reported():
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("FancyNorm", ["c", "gamma"], ["f"], domain="com.example", eps=0.1),
        helper.make_node("Relu", ["f"], ["y"]),
        # a custom op that reuses a standard name is still not costed as the standard one
        helper.make_node("Conv", ["y"], ["z"], domain="com.example"),
    ]
    m = model(
        nodes,
        [vi("x", [1, 4, 8, 8])],
        [vi("z", [1, 8, 8, 8])],
        [w("cw", 8, 4, 1, 1), w("gamma", 8)],
        value_info=[vi("f", [1, 8, 8, 8])],
        domains=["com.example"],
    )
    g = from_onnx(m)
    assert [layer.op for layer in g.layers] == [
        "Conv",
        "com.example.FancyNorm",
        "Relu",
        "com.example.Conv",
    ]
    fancy = g.layers[1]
    assert fancy.known is False and fancy.kind == "other"
    assert fancy.params == 8 and fancy.attrs["eps"] == pytest.approx(0.1)
    assert fancy.output_shape == (1, 8, 8, 8)
    assert g.unknown_ops == ("com.example.Conv", "com.example.FancyNorm")
    assert g.totals.macs == 8 * 64 * 4  # only the standard conv is costed


def test_custom_op_without_output_shape_is_an_error_naming_the_tensor():
    nodes = [
        helper.make_node("Mystery", ["x"], ["m"], domain="com.example"),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    m = model(nodes, [vi("x", [1, 4])], [vi("y", None)], domains=["com.example"])
    with pytest.raises(OnnxImportError, match=r"shape of tensor 'm'.*Mystery"):
        from_onnx(m)


# --------------------------------------------------------------------------- the onnx: scheme


def test_onnx_reference_scheme(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_model(), str(path))
    ref = f"onnx:{path}"
    assert parse_reference(ref).scheme == "onnx"
    with pytest.raises(OnnxImportError, match="'img' has dynamic dimensions"):
        resolve(ref)
    g = resolve(ref, input_shape=(1, 3, 10, 10))
    assert g.reference == ref and g.family == "onnx" and g.name == "dyn"
    assert g.totals.macs == 8 * 100 * 27
    assert resolve(ref, input_shape=(1, 3, 10, 10)) is g  # cached
    runnable = onnx_model(ref, input_shape=(2, 3, 10, 10))
    (y,) = run_ort(runnable, {"img": np.ones((2, 3, 10, 10), np.float32)})
    assert y.shape == (2, 8, 10, 10)
    with pytest.raises(NetworkReferenceError, match="names no file"):
        resolve(f"onnx:{tmp_path / 'absent.onnx'}")
    with pytest.raises(NetworkReferenceError, match="names no file"):
        onnx_model(f"onnx:{tmp_path}")
    with pytest.raises(NetworkReferenceError, match="unknown network reference scheme 'onyx'"):
        resolve(f"onyx:{path}")


def test_control_flow_reading_activations_is_an_unknown_layer():
    # If's explicit input is a constant, but its branches read the activation x: it is a
    # layer (reported as unknown), not constant folding.
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [1, 4])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["e"])], "else", [], [vi("e", [1, 4])]
    )
    nodes = [
        helper.make_node("If", ["cond"], ["i"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["i"], ["y"]),
    ]
    cond = numpy_helper.from_array(np.array(True), "cond")
    g = from_onnx(model(nodes, [vi("x", [1, 4])], [vi("y", None)], [cond]))
    assert [layer.op for layer in g.layers] == ["If", "Relu"]
    assert g.unknown_ops == ("If",)
    assert g.layers[0].output_shape == (1, 4)


def test_quantize_dequantize_and_mask_ops_have_cost_rules():
    # int8 QDQ around a conv, and a transformer-style mask: x where x > 0 else -1e4.
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("Conv", ["dq", "cw"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Greater", ["c", "zero"], ["mask"]),
        helper.make_node("Where", ["mask", "c", "neg"], ["y"]),
    ]
    inits = [
        floats("s", 0.1),
        numpy_helper.from_array(np.int8(0), "z"),
        w("cw", 4, 2, 1, 1),
        floats("zero", 0.0),
        floats("neg", -1e4),
    ]
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", None)], inits)
    g = from_onnx(m)
    assert g.unknown_ops == ()
    q, dq, conv, gt, where = g.layers
    assert q.kind == dq.kind == "act" and q.flops == 2 * 18 and q.params == 0
    assert conv.macs == 4 * 9 * 2 and conv.input_shape == (1, 2, 3, 3)
    assert q.attrs["y_scale"] == pytest.approx(0.1)
    assert gt.kind == where.kind == "eltwise" and where.flops == 36 and where.params == 0
    assert where.inputs == ("mask", "c") and where.attrs["scalar_inputs"] == ((2, -1e4),)
    (y,) = run_ort(m, {"x": np.ones((1, 2, 3, 3), np.float32)})
    assert y.shape == where.output_shape == (1, 4, 3, 3)


def test_registering_the_onnx_scheme_does_not_import_onnx():
    # `import latlab.datasets` (CLI startup) must stay light: onnx loads only on use.
    import os
    import subprocess
    import sys
    from pathlib import Path

    import latlab

    src = str(Path(latlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    code = "import sys, latlab.datasets; print('onnx' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", "False"]
