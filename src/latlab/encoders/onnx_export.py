"""Export a :class:`NetworkGraph` to an ONNX model that onnxruntime can run.

Generated networks (search spaces, zoo, micro-benchmarks) exist first as IR; to measure one we
need an executable model. The export writes each layer as the ONNX node(s) it stands for with
seeded random weights (latency does not depend on weight values, except for degenerate cases
such as all-zero weights that some runtimes could skip). Ops that need extra constant inputs in
modern opsets (Reshape's shape, Pad's pads, Slice's starts, ...) get them as initializers.

Extensions register an exporter for their own ops with :func:`register_exporter`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Layer, NetworkGraph

OPSET = 17
#: Half the size of the pool of random values weights are cut from (see ExportContext.weights).
WEIGHT_POOL = 1 << 16

#: Exporter signature: (layer, weight_names, ctx) -> list of NodeProto.
Exporter = Callable[[Layer, list[str], "ExportContext"], list[onnx.NodeProto]]


class ExportContext:
    """Initializers collected while exporting, with seeded weight generation."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def add(self, name: str, array: np.ndarray) -> str:
        """Register a constant tensor and return its name."""
        self.initializers.append(numpy_helper.from_array(array, name))
        self.names.add(name)
        return name

    #: Seeded standard-normal values that weights are cut from (grown on demand).
    _pool: np.ndarray | None = None

    def weights(self, name: str, shape: tuple[int, ...], scale: float = 0.1) -> str:
        """Seeded random weights: a window, at a random offset, of a pool of normal values
        twice the size of the largest tensor so far, capped at 2 x WEIGHT_POOL (larger tensors
        repeat the pool).

        Drawing every parameter afresh costs ~20 ns each, the bulk of exporting a sampled CNN
        (~5 M parameters); a window of the pool costs ~1 ns. Latency does not depend on the
        values, and windows of up to 65,536 distinct values are nothing a runtime could exploit.
        """
        n = math.prod(shape)
        want = min(2 * WEIGHT_POOL, 2 * n)
        have = 0 if self._pool is None else len(self._pool)
        if have < want:
            more = self.rng.standard_normal(want - have, dtype=np.float32)
            self._pool = more if self._pool is None else np.concatenate([self._pool, more])
        pool = self._pool
        assert pool is not None
        half = len(pool) // 2
        if n <= half:
            start = int(self.rng.integers(half + 1))
            window = pool[start : start + n]
        else:
            window = np.resize(pool, n)
        arr = window * np.float32(scale)
        return self.add(name, arr.reshape(shape))

    def ints(self, name: str, values: Any) -> str:
        return self.add(name, np.asarray(values, dtype=np.int64))

    def floats(self, name: str, values: Any) -> str:
        return self.add(name, np.asarray(values, dtype=np.float32))


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(op: str, fn: Exporter) -> None:
    """Make layers of ``op`` exportable (used by extensions such as binary layers)."""
    EXPORTERS[op] = fn


def _attrs(layer: Layer, mapping: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, onnx_key in mapping.items():
        if key in layer.attrs and layer.attrs[key] is not None:
            v = layer.attrs[key]
            out[onnx_key] = list(v) if isinstance(v, tuple) else v
    return out


def _default_weights(layer: Layer, ctx: ExportContext) -> list[str]:
    return [ctx.weights(f"{layer.name}.w{i}", w) for i, w in enumerate(layer.weight_shapes)]


def _node(layer: Layer, inputs: list[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(layer.op, inputs, list(layer.outputs), name=layer.name, **attrs)


def _export_conv(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    a = _attrs(
        layer,
        {"kernel": "kernel_shape", "stride": "strides", "pads": "pads", "dilation": "dilations"},
    )
    a["group"] = int(layer.attrs.get("groups", 1))
    return [_node(layer, [*layer.inputs, *w], **a)]


def _export_bn(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    c = layer.weight_shapes[0]
    names = [
        ctx.floats(f"{layer.name}.scale", 1.0 + 0.1 * ctx.rng.standard_normal(c)),
        ctx.floats(f"{layer.name}.bias", 0.1 * ctx.rng.standard_normal(c)),
        ctx.floats(f"{layer.name}.mean", 0.1 * ctx.rng.standard_normal(c)),
        ctx.floats(f"{layer.name}.var", 1.0 + 0.1 * ctx.rng.random(c)),
    ]
    return [_node(layer, [*layer.inputs, *names], epsilon=float(layer.attrs.get("epsilon", 1e-5)))]


def _export_pool(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    a = _attrs(
        layer,
        {
            "kernel": "kernel_shape",
            "stride": "strides",
            "pads": "pads",
            "ceil_mode": "ceil_mode",
            "count_include_pad": "count_include_pad",
            "dilation": "dilations",
        },
    )
    return [_node(layer, list(layer.inputs), **a)]


def _export_plain(mapping: dict[str, str] | None = None) -> Exporter:
    def export(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
        return [_node(layer, [*layer.inputs, *w], **_attrs(layer, mapping or {}))]

    return export


def _export_clip(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    ins = list(layer.inputs)
    lo, hi = layer.attrs.get("min"), layer.attrs.get("max")
    ins.append(ctx.floats(f"{layer.name}.min", lo) if lo is not None else "")
    if hi is not None:
        ins.append(ctx.floats(f"{layer.name}.max", hi))
    return [_node(layer, ins)]


def _export_reshape(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    shape = ctx.ints(f"{layer.name}.shape", layer.output_shape)
    return [_node(layer, [layer.inputs[0], shape])]


def _export_split(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    split = ctx.ints(f"{layer.name}.split", layer.attrs["split"])
    return [_node(layer, [layer.inputs[0], split], axis=int(layer.attrs.get("axis", 0)))]


def _export_slice(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    a = layer.attrs
    ins = [
        layer.inputs[0],
        ctx.ints(f"{layer.name}.starts", a["starts"]),
        ctx.ints(f"{layer.name}.ends", a["ends"]),
        ctx.ints(f"{layer.name}.axes", a["axes"]),
        ctx.ints(f"{layer.name}.steps", a.get("steps") or [1] * len(a["axes"])),
    ]
    return [_node(layer, ins)]


def _export_pad(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    pads = ctx.ints(f"{layer.name}.pads", layer.attrs["pads"])
    return [_node(layer, [layer.inputs[0], pads], mode=str(layer.attrs.get("mode", "constant")))]


def _export_resize(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    sizes = ctx.ints(f"{layer.name}.sizes", layer.output_shape)
    return [
        _node(layer, [layer.inputs[0], "", "", sizes], mode=str(layer.attrs.get("mode", "nearest")))
    ]


def _export_reduce(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    # opset 17: ReduceMean/Max/Min/L2 take axes as an attribute; ReduceSum (13+) as an input.
    keep = int(layer.attrs.get("keepdims", 1))
    axes = list(layer.attrs.get("axes", []))
    if layer.op == "ReduceSum":
        return [
            _node(layer, [layer.inputs[0], ctx.ints(f"{layer.name}.axes", axes)], keepdims=keep)
        ]
    return [_node(layer, list(layer.inputs), axes=axes, keepdims=keep)]


def _export_binary(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    """Element-wise op whose scalar constant operands are ``attrs["scalar_inputs"]``
    (``(position, value)`` pairs) put back as initializers at their positions."""
    ins = [*layer.inputs, *w]
    for k, (pos, value) in enumerate(sorted(layer.attrs.get("scalar_inputs") or ())):
        name = ctx.floats(f"{layer.name}.scalar{k}", 1.0 if value is None else value)
        ins.insert(min(int(pos), len(ins)), name)
    return [_node(layer, ins)]


for _op in ("Conv", "ConvTranspose"):
    EXPORTERS[_op] = _export_conv
EXPORTERS["BatchNormalization"] = _export_bn
for _op in ("MaxPool", "AveragePool", "LpPool"):
    EXPORTERS[_op] = _export_pool
EXPORTERS["Gemm"] = _export_plain({"transA": "transA", "transB": "transB"})
EXPORTERS["MatMul"] = _export_plain()
EXPORTERS["LRN"] = _export_plain({"size": "size", "alpha": "alpha", "beta": "beta", "bias": "bias"})
EXPORTERS["Clip"] = _export_clip
EXPORTERS["Reshape"] = _export_reshape
EXPORTERS["Split"] = _export_split
EXPORTERS["Slice"] = _export_slice
EXPORTERS["Pad"] = _export_pad
EXPORTERS["Resize"] = _export_resize
for _op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"):
    EXPORTERS[_op] = _export_reduce
for _op in ("Softmax", "LogSoftmax", "Concat", "Flatten"):
    EXPORTERS[_op] = _export_plain({"axis": "axis"})
EXPORTERS["Transpose"] = _export_plain({"perm": "perm"})
EXPORTERS["HardSigmoid"] = _export_plain({"alpha": "alpha", "beta": "beta"})
EXPORTERS["LeakyRelu"] = _export_plain({"alpha": "alpha"})
for _op in ("Add", "Sub", "Mul", "Div"):
    EXPORTERS[_op] = _export_binary
for _op in (
    "Relu", "Sigmoid", "Tanh", "HardSwish", "Sign", "Abs", "Neg", "Elu", "Selu", "Softplus",
    "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Mish", "Add", "Sub", "Mul", "Div", "Max",
    "Min", "Sum", "Pow", "Mean", "GlobalAveragePool", "GlobalMaxPool", "Identity", "Dropout",
    "PRelu",
):  # fmt: skip
    EXPORTERS.setdefault(_op, _export_plain())


def to_onnx(graph: NetworkGraph, seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """An executable ONNX model of ``graph`` with seeded random weights.

    Raises ``KeyError`` naming the op when a layer has no exporter (for instance an unknown op
    kept from an imported file: run the original file instead).
    """
    ctx = ExportContext(seed)
    nodes: list[onnx.NodeProto] = []
    for layer in graph.layers:
        fn = EXPORTERS.get(layer.op)
        if fn is None:
            raise KeyError(f"no ONNX exporter for op {layer.op!r} (layer {layer.name!r})")
        if fn is _export_bn:
            weight_names: list[str] = []
        else:
            weight_names = _default_weights(layer, ctx)
        nodes.extend(fn(layer, weight_names, ctx))
    shapes = {
        t: s
        for layer in graph.layers
        for t, s in zip(layer.outputs, layer.output_shapes, strict=True)
    }
    shapes.update(graph.inputs)
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
        for n, s in graph.inputs.items()
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shapes[n])) for n in graph.outputs
    ]
    g = helper.make_graph(nodes, graph.name[:120] or "latlab", inputs, outputs, ctx.initializers)
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset)], producer_name="latlab"
    )
    model.ir_version = min(model.ir_version, 9)
    return model
