"""Builder methods of attention models: shapes, counts, exports that run, and ORT's fusions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from latlab.datasets.bench.trace import runtime_mapping
from latlab.datasets.measure.inputs import model_inputs
from latlab.encoders import NetBuilder
from latlab.encoders.onnx_export import to_onnx
from latlab.encoders.onnx_import import from_onnx


def run(graph):
    """Export, run once in onnxruntime with the measurement's inputs; (model, output)."""
    m = to_onnx(graph)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return m, sess.run(None, model_inputs(m, 1))[0]


def test_linear_layernorm_and_batched_matmul_counts():
    b = NetBuilder("t", (2, 10, 64))
    y = b.linear(b.input, 32)  # MatMul (64, 32) + Add bias (32,)
    mm, bias = b.layers
    assert (mm.op, bias.op) == ("MatMul", "Add") and b.shape(y) == (2, 10, 32)
    assert mm.macs == 2 * 10 * 32 * 64 and mm.params + bias.params == 64 * 32 + 32
    b.layernorm(y)
    ln = b.layers[-1]
    assert ln.op == "LayerNormalization" and ln.params == 64 and ln.kind == "norm"
    q = b.reshape(b.layers[-1].outputs[0], (2, 10, 4, 8))
    q = b.transpose(q, (0, 2, 1, 3))  # (2, 4, 10, 8)
    s = b.batched_matmul(q, b.transpose(q, (0, 1, 3, 2)))
    att = b.layers[-1]
    assert b.shape(s) == (2, 4, 10, 10) and att.weight_shapes == () and att.params == 0
    assert att.macs == 2 * 4 * 10 * 10 * 8
    g = b.build([b.batched_matmul(b.softmax(s), q)])
    assert g.layers[-1].output_shape == (2, 4, 10, 8)
    _, out = run(g)
    assert out.shape == (2, 4, 10, 8)


def test_embedding_takes_int64_ids_below_the_vocabulary():
    b = NetBuilder("t", (1, 12), input_name="ids", input_dtype="int64")
    x = b.embedding(b.input, 500, 16)
    emb = b.layers[-1]
    assert b.shape(x) == (1, 12, 16) and emb.params == 500 * 16 and emb.attrs["vocab"] == 500
    g = b.build()
    assert g.input_dtype("ids") == "int64"
    m, out = run(g)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert m.graph.node[0].input[1] == "ids"  # Gather(table, ids)
    ids = model_inputs(m, 1)["ids"]
    assert 2 < ids.max() < 500
    assert out.shape == (1, 12, 16)
    back = from_onnx(m)
    assert back.meta["input_dtypes"] == {"ids": "int64"}
    assert back.layers[0].weight_shapes == ((500, 16),) and back.totals.params == 500 * 16


def test_shared_blocks_count_their_weights_once_and_export_them_once():
    b = NetBuilder("t", (1, 8, 32))
    x = b.input
    for _ in range(3):
        with b.shared("block"):
            x = b.layernorm(b.linear(x, 32))
    g = b.build()
    assert g.totals.params == 32 * 32 + 32 + 64  # one block's MatMul, bias, LN
    assert sum(1 for la in g.layers if la.attrs.get("weight_of")) == 6
    m, out = run(g)
    assert len(m.graph.initializer) == 4 and out.shape == (1, 8, 32)
    # importing the file counts each shared initializer once too
    back = from_onnx(m)
    assert back.totals.params == g.totals.params
    assert [la.attrs.get("shared_with") for la in back.layers[3:6]] == [
        la.name for la in back.layers[:3]
    ]
    with pytest.raises(ValueError, match="differs"), b.shared("block"):
        b.linear(x, 16)
    with pytest.raises(ValueError, match="more weighted layers"), b.shared("block"):
        b.layernorm(b.layernorm(b.linear(x, 32)))


def test_stored_params_buffers_and_tokens():
    b = NetBuilder("t", (2, 5, 8))
    x = b.prepend_token(b.input)  # class token: (2, 1, 8) operand, 8 learned values
    assert b.shape(x) == (2, 6, 8) and b.layers[-1].params == 8
    x = b.add_weight(x, (1, 6, 8), stored_params=512 * 8)  # rows of a 512-row table
    assert b.layers[-1].params == 512 * 8
    x = b.add_weight(x, (1, 1, 6, 8), stored_params=0)  # a constant buffer (mask)
    assert b.layers[-1].params == 0 and b.layers[-1].weight_bytes == 6 * 8 * 4
    y = b.gather(x, 0, axis=1)
    assert b.shape(y) == (1, 6, 8)  # the (1, 1, 6, 8) buffer broadcast x to (1, 2, 6, 8)
    _, out = run(b.build())
    assert out.shape == (1, 6, 8)


def test_rmsnorm_gelu_and_rotary_are_the_exported_primitive_ops():
    b = NetBuilder("t", (1, 2, 6, 8))
    r = b.rmsnorm(b.input)
    assert [la.op for la in b.layers] == ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"]
    assert b.layers[-1].params == 8
    n = len(b.layers)
    g = b.gelu(r)
    assert [la.op for la in b.layers[n:]] == ["Div", "Erf", "Add", "Mul", "Mul"]
    n = len(b.layers)
    t = b.gelu(g, approximate="tanh")
    assert "Tanh" in [la.op for la in b.layers[n:]]
    n = len(b.layers)
    y = b.rotary(t)
    ops = [la.op for la in b.layers[n:]]
    assert ops == ["Slice", "Slice", "Neg", "Concat", "Mul", "Mul", "Add"]
    assert sum(la.params for la in b.layers[n:]) == 0  # cos/sin tables are buffers
    graph = b.build([y])
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8)).astype(np.float32)
    m = to_onnx(graph)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    (rms,) = ort.InferenceSession(
        to_onnx(graph_upto(graph, r)).SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"input": x})
    w = onnx.numpy_helper.to_array(
        next(t for t in m.graph.initializer if t.name.startswith(graph.layers[5].name))
    )
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w
    assert np.allclose(rms, expected, atol=1e-5)
    assert sess.run(None, {"input": x})[0].shape == (1, 2, 6, 8)


def graph_upto(graph, tensor):
    from latlab.encoders.ir import NetworkGraph

    last = graph.producer[tensor]
    return NetworkGraph("part", graph.inputs, [tensor], graph.layers[: last + 1], graph.meta)


def test_onnxruntime_fuses_gelu_forms_and_rmsnorm():
    b = NetBuilder("t", (1, 16, 64))
    x = b.gelu(b.linear(b.input, 64))
    x = b.gelu(b.linear(x, 64), approximate="tanh")
    x = b.rmsnorm(x)
    x = b.layernorm(b.add(x, b.input))
    ops = Counter(n.op for n in runtime_mapping(b.build()).nodes)
    assert ops["Gelu"] == 1 and ops["FastGelu"] == 1
    assert ops["SimplifiedLayerNormalization"] == 1 and ops["SkipLayerNormalization"] == 1
    assert not ops["Erf"] and not ops["Tanh"] and not ops["Pow"]
