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
from onnx import TensorProto, helper

from latlab.encoders.ir import Layer, NetworkGraph
from latlab.registry import Registry

OPSET = 17
#: Half the size of the pool of random values weights are cut from (see ExportContext.weights).
WEIGHT_POOL = 1 << 16

#: Exporter signature: (layer, weight_names, ctx) -> list of NodeProto.
Exporter = Callable[[Layer, list[str], "ExportContext"], list[onnx.NodeProto]]


class ExportContext:
    """Initializers collected while exporting, with seeded weight generation."""

    def __init__(self, seed: int, opset: int = OPSET) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        # Initializers are written straight into the model being built: building a graph with
        # onnx.helper copies every weight twice more (make_graph, make_model), which was most
        # of the export time of a 355 M-parameter GPT-2.
        self.model = onnx.ModelProto()
        self.initializers = self.model.graph.initializer
        self.names: set[str] = set()

    def add(self, name: str, array: np.ndarray) -> str:
        """Register a constant tensor and return its name."""
        # np.asarray(order="C"), not ascontiguousarray: that makes a scalar 1-D
        arr = np.asarray(array, dtype=np.asarray(array).dtype.newbyteorder("<"), order="C")
        t = self.initializers.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype.newbyteorder("="))
        t.dims.extend(arr.shape)
        t.raw_data = arr.tobytes()
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


#: op -> exporter; lazy ``"module:function"`` entries are imported when a layer of the op is
#: first exported (the binary layers' exporters live in :mod:`latlab.encoders.binary_onnx`);
#: plug-ins: the ``latlab.onnx_exporters`` entry-point group.
EXPORTERS: Registry[Exporter] = Registry(
    "ONNX exporter",
    group="latlab.onnx_exporters",
    check=callable,
    entries={
        "BinaryGemm": "latlab.encoders.binary_onnx:export_binary_gemm",
        "BinaryConv": "latlab.encoders.binary_onnx:export_binary_conv",
    },
)


def register_exporter(op: str, fn: Exporter | str) -> None:
    """Make layers of ``op`` exportable: a function, or ``"module:function"`` imported on
    first use (how extensions such as the binary layers register)."""
    EXPORTERS.register(op, fn)


def _attrs(layer: Layer, mapping: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, onnx_key in mapping.items():
        if key in layer.attrs and layer.attrs[key] is not None:
            v = layer.attrs[key]
            out[onnx_key] = list(v) if isinstance(v, tuple) else v
    return out


def _default_weights(layer: Layer, ctx: ExportContext) -> list[str]:
    source = layer.attrs.get("weight_of")
    if source:  # shared weights (ALBERT): the same initializers as the source layer's
        names = [f"{source}.w{i}" for i in range(len(layer.weight_shapes))]
        if all(n in ctx.names for n in names):
            return names
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


#: IR attribute keys that differ from the ONNX attribute names.
ONNX_ATTR_NAMES = {
    "kernel": "kernel_shape",
    "stride": "strides",
    "dilation": "dilations",
    "groups": "group",
}


def _schema_attrs(op: str, opset: int) -> frozenset[str]:
    try:
        return frozenset(onnx.defs.get_schema(op, opset).attributes)
    except Exception:
        return frozenset()


def _export_generic(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    """Any op with an ONNX schema: activations then weights as inputs, and every IR attribute
    that is an attribute of the op's schema at the export opset (IR keys mapped back)."""
    allowed = _schema_attrs(layer.op, ctx.opset)
    attrs: dict[str, Any] = {}
    for key, value in layer.attrs.items():
        onnx_key = ONNX_ATTR_NAMES.get(key, key)
        if onnx_key in allowed and value is not None:
            attrs[onnx_key] = list(value) if isinstance(value, tuple) else value
    return [_node(layer, _with_scalars(layer, [*layer.inputs, *w], ctx), **attrs)]


def _with_scalars(layer: Layer, inputs: list[str], ctx: ExportContext) -> list[str]:
    """Put back the scalar constant operands an import recorded (``x * 0.5``) at their
    positions; an unknown value becomes 1 (latency does not depend on it)."""
    scalars = layer.attrs.get("scalar_inputs")
    if not scalars:
        return inputs
    out = list(inputs)
    for k, (pos, value) in enumerate(sorted(scalars)):
        name = ctx.floats(f"{layer.name}.scalar{k}", 1.0 if value is None else value)
        out.insert(min(int(pos), len(out)), name)
    return out


def min_opset(op: str, opset: int = OPSET) -> int | None:
    """The lowest opset >= ``opset`` in which ``op`` exists (None when ONNX has no such op)."""
    latest = onnx.defs.onnx_opset_version()
    for version in range(opset, latest + 1):
        try:
            onnx.defs.get_schema(op, version)
            return version
        except Exception:
            continue
    return None


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
    # Sizes rather than scales: the output shape is then exactly the IR's. Other attributes
    # (coordinate_transformation_mode, nearest_mode, ... of imported layers) pass through.
    sizes = ctx.ints(f"{layer.name}.sizes", layer.output_shape)
    allowed = _schema_attrs("Resize", ctx.opset) - {"axes"}
    attrs = {k: v for k, v in layer.attrs.items() if k in allowed and v is not None}
    attrs["mode"] = str(layer.attrs.get("mode", "nearest"))
    return [_node(layer, [layer.inputs[0], "", "", sizes], **attrs)]


def _export_reduce(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    # Axes are an attribute up to opset 17 (ReduceSum: 12) and an input from 18 (13).
    keep = int(layer.attrs.get("keepdims", 1))
    axes = list(layer.attrs.get("axes", []))
    as_input = ctx.opset >= (13 if layer.op == "ReduceSum" else 18)
    if not axes:
        return [_node(layer, list(layer.inputs), keepdims=keep)]
    if as_input:
        return [
            _node(layer, [layer.inputs[0], ctx.ints(f"{layer.name}.axes", axes)], keepdims=keep)
        ]
    return [_node(layer, list(layer.inputs), axes=axes, keepdims=keep)]


def _export_concat(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    # ONNX requires the axis; the IR's default (as in its shape rule) is 1.
    ins = [*w, *layer.inputs] if layer.attrs.get("weights_first") else [*layer.inputs, *w]
    return [_node(layer, ins, axis=int(layer.attrs.get("axis", 1)))]


def _export_upsample(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    # Upsample is deprecated since opset 10: the same resampling as a Resize to the IR sizes.
    sizes = ctx.ints(f"{layer.name}.sizes", layer.output_shape)
    mode = str(layer.attrs.get("mode", "nearest"))
    node = helper.make_node(
        "Resize", [layer.inputs[0], "", "", sizes], list(layer.outputs), name=layer.name, mode=mode
    )
    return [node]


def _export_axes_input(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    # Squeeze/Unsqueeze: axes are an input from opset 13.
    axes = layer.attrs.get("axes")
    if axes is None:
        return [_node(layer, list(layer.inputs))]
    axes = [axes] if isinstance(axes, int) else list(axes)
    return [_node(layer, [layer.inputs[0], ctx.ints(f"{layer.name}.axes", axes)])]


def _export_expand(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    return [_node(layer, [layer.inputs[0], ctx.ints(f"{layer.name}.shape", layer.output_shape)])]


def _export_tile(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    reps = [o // i for o, i in zip(layer.output_shape, layer.input_shape, strict=True)]
    return [_node(layer, [layer.inputs[0], ctx.ints(f"{layer.name}.repeats", reps)])]


def _export_gather(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    axis = int(layer.attrs.get("axis", 0))
    if w:  # an embedding: Gather(table, ids)
        return [_node(layer, [w[0], *layer.inputs], axis=axis)]
    idx = np.asarray(layer.attrs.get("indices", 0), dtype=np.int64)
    if idx.size == 1 and len(layer.output_shape) == len(layer.input_shape) - 1:
        idx = idx.reshape(())  # a scalar index drops the axis (a ViT's class token)
    indices = ctx.add(f"{layer.name}.indices", idx)
    return [_node(layer, [*layer.inputs, indices], axis=axis)]


EXPORTERS["Conv"] = _export_conv
EXPORTERS["ConvTranspose"] = _export_generic
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
EXPORTERS["Concat"] = _export_concat
EXPORTERS["Upsample"] = _export_upsample
for _op in ("Squeeze", "Unsqueeze"):
    EXPORTERS[_op] = _export_axes_input
EXPORTERS["Expand"] = _export_expand
EXPORTERS["Tile"] = _export_tile
EXPORTERS["Gather"] = _export_gather
# Everything else with an ONNX schema (activations, element-wise ops, Softmax, Flatten,
# Transpose, LayerNormalization, DepthToSpace, ...) goes through the schema-driven exporter.


def to_onnx(graph: NetworkGraph, seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """An executable ONNX model of ``graph`` with seeded random weights.

    The opset is ``opset`` unless a layer's op only exists from a later one (Mish: 18,
    Gelu: 20, Swish: 24); then the model uses that later opset. Raises ``KeyError`` naming the op
    when a layer has no exporter (for instance an unknown op kept from an imported file: run the
    original file instead).
    """
    opset = _required_opset(graph, opset)
    ctx = ExportContext(seed, opset)
    nodes: list[onnx.NodeProto] = []
    for layer in graph.layers:
        fn = EXPORTERS.get(layer.op)
        if fn is None and onnx.defs.has(layer.op):
            fn = _export_generic
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
        helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(np.dtype(graph.input_dtype(n))), list(s)
        )
        for n, s in graph.inputs.items()
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shapes[n])) for n in graph.outputs
    ]
    model = ctx.model
    g = model.graph
    g.name = graph.name[:120] or "latlab"
    g.node.extend(nodes)
    g.input.extend(inputs)
    g.output.extend(outputs)
    opsets = [helper.make_opsetid("", opset)]
    model.opset_import.extend(opsets)
    model.producer_name = "latlab"
    # The oldest IR version that carries this opset, so that older runtimes load the model.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _required_opset(graph: NetworkGraph, opset: int) -> int:
    """``opset``, raised to the first opset of any layer op introduced later (Gelu: 20)."""
    needed = opset
    for op in {layer.op for layer in graph.layers}:
        first = min_opset(op, opset) if onnx.defs.has(op) else None
        if first is not None:
            needed = max(needed, first)
    return needed
