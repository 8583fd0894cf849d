"""Test helpers: run an exported network in onnxruntime and check its shapes against the IR."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from latlab.encoders.ir import NetworkGraph
from latlab.encoders.onnx_export import to_onnx


def run_ort(
    graph: NetworkGraph, x: np.ndarray | None = None, *, check_shapes: bool = False
) -> np.ndarray:
    """Export ``graph``, run it once in onnxruntime and return its output.

    With ``check_shapes``, ONNX shape inference on the export must also give every tensor of
    the graph the IR's shape (weights are dropped first: only constant shapes matter).
    """
    model = to_onnx(graph)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if x is None:
        x = np.random.default_rng(0).random(graph.inputs["input"], dtype=np.float32)
    out = sess.run(None, {"input": x})[0]
    if check_shapes:
        assert_onnx_shapes_match(graph, model)
    return out


def assert_onnx_shapes_match(graph: NetworkGraph, model: onnx.ModelProto | None = None) -> None:
    """ONNX shape inference on the export gives every tensor the IR's shape."""
    model = model or to_onnx(graph)
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    for t in weights:  # float weights become typed inputs: inference needs their shapes only
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        )
        model.graph.initializer.remove(t)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    for layer in graph.layers:
        for name, shape in zip(layer.outputs, layer.output_shapes, strict=True):
            assert shapes[name] == shape, (layer.name, layer.op)
