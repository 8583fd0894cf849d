"""Import an ONNX model into the IR (:class:`~latlab.encoders.ir.NetworkGraph`).

Real-world files are messy, and only *shapes* matter for the IR, so the import is built around
ONNX shape inference rather than around weight values:

* The file is parsed without its external data (so a file whose weights were not shipped
  imports), and shape inference runs on a copy whose large initializers are reduced to typed
  graph inputs, so it never copies weights.
* Dynamic input dimensions are fixed from the user's ``input_shape`` (a symbolic batch alone
  defaults to ``batch``); a dynamic dimension nobody gave is an :class:`OnnxImportError` naming
  the input and its dimensions.
* Nodes that do not depend on activation *values* are constant folding, not layers: Constant,
  ConstantOfShape, weight-producing subgraphs (Identity, DequantizeLinear, Transpose of an
  initializer...) and the shape arithmetic torch exports emit for ``x.view(x.size(0), -1)``
  (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``): a ``Shape`` output depends only on a
  static shape once the inputs are fixed, so it starts a constant subgraph. Outputs of
  constant subgraphs that feed a layer's parameter inputs are its ``weight_shapes``; those
  feeding configuration inputs (Reshape's shape, Slice's starts, Clip's bounds, Resize's
  scales...) are read into the layer's ``attrs`` under the IR keys.
  A weight computed at run time keeps the shape the layer reads (``weight_shapes`` and
  ``weight_bytes``: what the runtime moves), but its ``params`` are the stored values it is
  computed from (ViT's class token expanded to the batch counts its 768 values). Scalar
  operands of arithmetic (``x * 0.5``) are ``attrs["scalar_inputs"]``, not parameters.
* Where whole-graph inference falls short (shape arithmetic through Div, which onnx's data
  propagation does not follow; ceil-mode pooling, where onnx keeps a window onnxruntime and
  PyTorch drop), nodes are re-inferred one by one with the constants computed.
* Old opsets (7-9, the classic model zoo): shapes the operator specs fix but onnx leaves open
  are filled in (Dropout's mask, MaxPool's indices); a trailing output nothing reads whose shape
  is still unknown is dropped from its layer instead of failing the import. Attribute forms of
  Pad, Clip, Slice, Squeeze/Unsqueeze/Split, ReduceMean and Upsample import like their input
  forms (``tests/test_onnx_opsets.py`` covers opsets 7-21 against onnxruntime's shapes).
* A file no runtime could execute (a Conv whose weight does not fit its input channels, a
  Reshape that changes the element count, a Gemm/MatMul whose inner dimensions differ) is an
  :class:`OnnxImportError` naming the node and the reason, not an IR with made-up costs; a
  tensor left without a shape is reported with the reason onnx's strict inference gave.
* Every remaining node becomes a layer with normalised attributes (``kernel``, ``stride``,
  ``dilation``, ``pads`` with ``auto_pad`` resolved, ``groups``, ...). An op without a cost
  rule, or from a custom domain (named ``domain.Op``), is kept with ``known=False`` and listed in
  :attr:`NetworkGraph.unknown_ops`.

Checked against torchvision (``benchmarks/check_torchvision_import.py``): for 17
classification models (ResNet, ResNeXt, MobileNet v2/v3, GoogLeNet, Inception v3, SqueezeNet,
ShuffleNet, EfficientNet, DenseNet, MNASNet, RegNet, ConvNeXt, AlexNet, VGG, ViT, Swin) every
layer's shape equals onnxruntime's and no op lacks a cost rule; parameters equal PyTorch's
except Swin-T (+0.2 %: its shifted-window masks are generated at run time and count as
weights). The hot path avoids networkx and deep copies of weights: a ResNet-50-sized file
imports in a few tens of milliseconds (``benchmarks/bench_ir.py``).

The steps live in their own modules: :mod:`~latlab.encoders.onnx_common` (shared tables),
:mod:`~latlab.encoders.onnx_load` (loading, input shapes), :mod:`~latlab.encoders.onnx_shapes`
(shape inference), :mod:`~latlab.encoders.onnx_constants` (attributes, the constant
interpreter); this module is the import itself (layers from nodes).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Layer, NetworkGraph, Shape
from latlab.encoders.onnx_common import (
    CONFIG_INPUTS,
    DEFAULT_DOMAINS,
    ELEMENT_BITS,
    ELTWISE_OPS,
    SHAPE_ONLY_OPS,
    SMALL_TENSOR,
    WINDOW_OPS,
    InputShape,
    ModelSource,
    bits_of,
)
from latlab.encoders.onnx_constants import (
    Constants,
    config_value,
    node_attrs,
    normalise_window,
    resolve_auto_pad,
)
from latlab.encoders.onnx_load import (
    activation_inputs,
    fix_model_inputs,
    fixed_input_shapes,
    load_model,
    load_runnable,
)
from latlab.encoders.onnx_shapes import infer_model, opset_of, shape_model
from latlab.encoders.ops import apply_cost, conv_output_size
from latlab.encoders.quantize import INT8_KERNEL_OPS, MOVE_OPS, QDQ_OPS, own_precision
from latlab.errors import OnnxImportError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the import


def from_onnx(
    model_or_path: ModelSource,
    input_shape: InputShape | None = None,
    name: str | None = None,
    *,
    batch: int = 1,
    meta: Mapping[str, Any] | None = None,
) -> NetworkGraph:
    """The IR of an ONNX model (a path, serialized bytes or a ``ModelProto``).

    ``input_shape`` fixes dynamic input dimensions (one shape, or ``{input name: shape}``); a
    symbolic batch dimension alone defaults to ``batch``. The model is not modified. Raises
    :class:`OnnxImportError` naming the file, input or tensor when the file is missing or
    corrupt, a dynamic dimension has no value, or a tensor's shape cannot be inferred.

    A model with QuantizeLinear/DequantizeLinear nodes (an already quantised QDQ file) gets
    ``meta["quantized"] = True`` and ``meta["precision"]`` (its narrowest width, ``int8``):
    its layers' bit widths are the file's own, which
    :func:`~latlab.encoders.quantize.at_precision` keeps.
    """
    path = None if isinstance(model_or_path, onnx.ModelProto | bytes | bytearray) else model_or_path
    label = f"ONNX file {os.fspath(path)}" if path is not None else "ONNX model"
    model = load_model(model_or_path)
    shapes = fixed_input_shapes(model, input_shape, batch)
    layers, outputs = _import_layers(model, shapes, label)
    graph_name = (
        name
        or (Path(os.fspath(path)).stem if path is not None else "")
        or (model.graph.name or "onnx-model")
    )
    info: dict[str, Any] = {
        "family": "onnx",
        "reference": f"onnx:{os.fspath(path)}" if path is not None else graph_name,
        "opset": opset_of(model),
    }
    if model.producer_name:
        info["producer"] = model.producer_name
    if any(n.op_type in QDQ_OPS for n in model.graph.node):
        # the layers' bit widths are the file's own (see _qdq_bits): at_precision keeps them
        info["quantized"] = True
        info["precision"] = own_precision(layers)
    dtypes = {
        vi.name: np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
        for vi in activation_inputs(model)
        if vi.name in shapes
        and vi.type.tensor_type.elem_type not in (0, TensorProto.FLOAT)
        and vi.type.tensor_type.elem_type in ELEMENT_BITS
    }
    if dtypes:  # token ids and other non-float inputs (the IR's input element types)
        info["input_dtypes"] = dtypes
    info.update(meta or {})
    return NetworkGraph(graph_name, shapes, outputs, layers, meta=info)


def _import_layers(
    model: onnx.ModelProto, input_shapes: dict[str, Shape], label: str
) -> tuple[list[Layer], list[str]]:
    nodes = _topological(model.graph.node, label)

    # Which tensors carry activation values: graph inputs and anything computed from them,
    # except through Shape/Size (a shape is static once the inputs are fixed).
    dynamic = set(input_shapes)
    producers: dict[str, onnx.NodeProto] = {}
    layer_nodes: list[onnx.NodeProto] = []
    for node in nodes:
        for o in node.output:
            if o:
                producers[o] = node
        if node.op_type in SHAPE_ONLY_OPS and node.domain in DEFAULT_DOMAINS:
            continue
        if any(t in dynamic for t in node.input if t) or any(
            t in dynamic for t in _captured_inputs(node)
        ):
            dynamic.update(o for o in node.output if o)
            layer_nodes.append(node)
    if not layer_nodes:
        raise OnnxImportError(f"{label} has no layers that depend on its inputs")
    const_tensors = {t for t in producers if t not in dynamic}

    inferred, reasons = infer_model(shape_model(model, nodes, input_shapes), label)
    shape_of, dtype_of = _value_infos(inferred)
    shape_of.update(input_shapes)
    consts = Constants(model, producers, const_tensors, shape_of)
    consts.dtype_of = dtype_of
    _repair_shapes(model, nodes, consts, shape_of, dtype_of)
    graph_outputs = [vi.name for vi in model.graph.output]
    _fill_spec_shapes(layer_nodes, shape_of, dtype_of)
    needed = {t for n in nodes for t in n.input if t} | {
        t for n in nodes for t in _captured_inputs(n)
    }
    needed.update(graph_outputs)

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(n)
    layers: list[Layer] = []
    used_names: set[str] = set()
    seen_weights: dict[str, str] = {}
    for index, node in enumerate(layer_nodes):
        layers.append(
            _make_layer(
                node,
                index,
                dynamic,
                shape_of,
                dtype_of,
                producers,
                consts,
                used_names,
                needed,
                reasons,
                seen_weights,
                consumers,
            )
        )
    produced = {o for layer in layers for o in layer.outputs}
    outputs = [t for t in graph_outputs if t in dynamic and t in produced]
    return layers, outputs


def _fill_spec_shapes(
    nodes: Sequence[onnx.NodeProto], shape_of: dict[str, Shape | None], dtype_of: dict[str, int]
) -> None:
    """Shapes the ONNX operator specs fix but onnx's inference leaves open at old opsets.

    Dropout's optional ``mask`` (opsets 7-9, where onnx infers the output only) has the
    input's shape by definition; MaxPool's ``Indices`` has the pooled output's shape.
    Classic model-zoo files (AlexNet, CaffeNet, GoogLeNet, SqueezeNet, ... at opset 3-9)
    carry both.
    """
    for node in nodes:
        if node.domain not in DEFAULT_DOMAINS or len(node.output) < 2 or not node.output[1]:
            continue
        mask = node.output[1]
        if shape_of.get(mask) is not None:
            continue
        if node.op_type == "Dropout":
            shape_of[mask] = shape_of.get(node.input[0])
            dtype_of.setdefault(mask, TensorProto.BOOL)
        elif node.op_type == "MaxPool":
            shape_of[mask] = shape_of.get(node.output[0])
            dtype_of.setdefault(mask, TensorProto.INT64)


def _captured_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors a control-flow node's subgraphs read (If, Loop, Scan)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for inner in g.node:
                names.update(t for t in inner.input if t and t not in local)
                names.update(_captured_inputs(inner) - local)
                local.update(inner.output)
    return names


def _repair_shapes(
    model: onnx.ModelProto,
    nodes: Sequence[onnx.NodeProto],
    consts: Constants,
    shape_of: dict[str, Shape | None],
    dtype_of: dict[str, int],
) -> None:
    """Repair what ONNX's whole-graph shape inference gets wrong or cannot follow.

    * Data propagation stops at ops such as Div (torch's ``chunk`` computes split points as
      ``(dim + 2) / 3 * k``; Swin's window partition is full of such arithmetic), leaving the
      Slice or Reshape after it without a shape. Its inputs are constants once the input
      shapes are fixed: latlab computes them (reading ``Shape`` from the shapes known so far).
    * For pooling with ``ceil_mode=1``, onnx's inference keeps a last window that starts in the
      end padding, which onnxruntime and PyTorch drop (a 2x2/2 pad-1 pool of 5x5 gives 3x3, not
      4x4); the IR follows the runtime.

    From the first node with a problem on, nodes are re-inferred one at a time in topological
    order (``infer_node_outputs`` with the computed constant inputs), and so is everything
    downstream of a shape that changed. Files that need neither pay one scan of the nodes.
    """
    start = next(
        (
            i
            for i, node in enumerate(nodes)
            if any(o and shape_of.get(o) is None for o in node.output)
            or _pool_shape(node, shape_of) not in (None, shape_of.get(node.output[0]))
        ),
        None,
    )
    if start is None:
        return
    opsets = {imp.domain or "": int(imp.version) for imp in model.opset_import}
    opsets.setdefault("", opsets.get("ai.onnx", 1))
    dirty: set[str] = set()
    for node in nodes[start:]:
        outs = [o for o in node.output if o]
        stale = any(t in dirty for t in node.input if t)
        if (
            not stale
            and all(shape_of.get(o) is not None for o in outs)
            and _pool_shape(node, shape_of) in (None, shape_of.get(outs[0]))
        ):
            continue
        if stale and any(o in consts.const_tensors for o in outs):
            dirty.update(outs)  # a constant computed from a changed shape changes value
            for o in outs:
                consts.cache.pop(o, None)
        new = _infer_node(node, opsets, consts, shape_of, dtype_of)
        for o, (shape, dtype) in new.items():
            if shape != shape_of.get(o):
                shape_of[o] = shape
                dirty.add(o)
                consts.cache.pop(o, None)
            if dtype:
                dtype_of[o] = dtype


def _pool_shape(node: onnx.NodeProto, shape_of: dict[str, Shape | None]) -> Shape | None:
    """The runtime's output shape of a ceil-mode pool (None for anything else)."""
    if node.op_type not in POOL_OPS or node.domain not in DEFAULT_DOMAINS or not node.input:
        return None
    a = {attr.name: attr for attr in node.attribute}
    if "ceil_mode" not in a or a["ceil_mode"].i != 1 or "kernel_shape" not in a:
        return None
    if "auto_pad" in a and a["auto_pad"].s not in (b"", b"NOTSET"):
        return None
    x = shape_of.get(node.input[0])
    if x is None:
        return None
    k = list(a["kernel_shape"].ints)
    nd = len(k)
    s = list(a["strides"].ints) if "strides" in a else [1] * nd
    d = list(a["dilations"].ints) if "dilations" in a else [1] * nd
    p = list(a["pads"].ints) if "pads" in a else [0] * (2 * nd)
    spatial = (
        conv_output_size(x[2 + i], k[i], s[i], p[i], p[i + nd], d[i], ceil=True) for i in range(nd)
    )
    return (x[0], x[1], *spatial)


POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})


def _infer_node(
    node: onnx.NodeProto,
    opsets: dict[str, int],
    consts: Constants,
    shape_of: dict[str, Shape | None],
    dtype_of: dict[str, int],
) -> dict[str, tuple[Shape | None, int]]:
    """Output (shape, element type) of one node from its inputs' shapes and constant values."""
    outs = [o for o in node.output if o]
    pool = _pool_shape(node, shape_of)
    if pool is not None:
        return {outs[0]: (pool, dtype_of.get(node.input[0], 0))}
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    ):
        return {}  # control flow: keep what whole-graph inference found
    if all(o in consts.const_tensors for o in outs):
        # Shape arithmetic: the computed values give the shapes directly.
        values = [consts.value(o) for o in outs]
        if all(v is not None for v in values):
            return {
                o: (tuple(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype))  # type: ignore[union-attr]
                for o, v in zip(outs, values, strict=True)
            }
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain, 1), node.domain)
    except Exception:
        return {}  # no schema (custom op): its shapes come from the file's value_info
    types: dict[str, onnx.TypeProto] = {}
    data: dict[str, onnx.TensorProto] = {}
    for t in node.input:
        if not t or t in types:
            continue
        shape = shape_of.get(t)
        types[t] = helper.make_tensor_type_proto(dtype_of.get(t, TensorProto.FLOAT), shape)
        if t in consts.const_tensors or t in consts.initializers():
            value = consts.value(t) if shape is None or math.prod(shape) <= SMALL_TENSOR else None
            if value is not None:
                data[t] = numpy_helper.from_array(value, t)
    try:
        inferred = onnx.shape_inference.infer_node_outputs(schema, node, types, data)
    except Exception as exc:
        log.debug("per-node inference of %s (%s) failed: %s", node.name, node.op_type, exc)
        return {}
    result: dict[str, tuple[Shape | None, int]] = {}
    for o in outs:
        tp = inferred.get(o)
        if tp is None or not tp.HasField("tensor_type"):
            continue
        tt = tp.tensor_type
        static: Shape | None = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            static = tuple(int(d.dim_value) for d in tt.shape.dim)
        result[o] = (static, int(tt.elem_type))
    return result


def _value_infos(inferred: onnx.ModelProto) -> tuple[dict[str, Shape | None], dict[str, int]]:
    shape_of: dict[str, Shape | None] = {}
    dtype_of: dict[str, int] = {}
    g = inferred.graph
    for t in g.initializer:
        shape_of[t.name] = tuple(int(d) for d in t.dims)
        dtype_of[t.name] = int(t.data_type)
    for seq in (g.input, g.value_info, g.output):
        for vi in seq:
            tt = vi.type.tensor_type
            if tt.elem_type:
                dtype_of[vi.name] = int(tt.elem_type)
            if not tt.HasField("shape"):
                shape_of.setdefault(vi.name, None)
                continue
            dims = tt.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                shape_of[vi.name] = tuple(int(d.dim_value) for d in dims)
            else:
                shape_of.setdefault(vi.name, None)
    return shape_of, dtype_of


def _topological(nodes: Sequence[onnx.NodeProto], label: str) -> list[onnx.NodeProto]:
    """Nodes in an order where every tensor is produced before it is used.

    ONNX requires sorted graphs but not every producer complies. Kahn's algorithm over tensor
    names, written out because the common case (already sorted) must cost one pass and no
    graph library. Inputs no node produces (graph inputs, initializers) are always ready.
    """
    produced = {o for n in nodes for o in n.output if o}
    ready: set[str] = set()
    for n in nodes:
        if not all((not t) or (t in ready) or (t not in produced) for t in n.input):
            break
        ready.update(n.output)
    else:
        return list(nodes)
    ready = set()
    pending = list(nodes)
    order: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all((not t) or (t in ready) or (t not in produced) for t in n.input):
                order.append(n)
                ready.update(o for o in n.output if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            names = ", ".join(repr(n.name or n.op_type) for n in rest[:3])
            raise OnnxImportError(f"{label} has a cycle through nodes {names}")
        pending = rest
    return order


def _weight_bits(name: str, dtype_of: dict[str, int], producers: dict[str, onnx.NodeProto]) -> int:
    # A quantized weight reaches the layer as DequantizeLinear(int8 tensor): its stored width
    # is the int8 one.
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input:
        return bits_of(dtype_of.get(node.input[0], TensorProto.FLOAT))
    return bits_of(dtype_of.get(name, TensorProto.FLOAT))


def _qdq_bits(
    node: onnx.NodeProto,
    inputs: Sequence[str],
    outputs: Sequence[str],
    producers: Mapping[str, onnx.NodeProto],
    consumers: Mapping[str, Sequence[onnx.NodeProto]],
    dtype_of: Mapping[str, int],
) -> int | None:
    """The bit width a layer of a QDQ model really moves, or None when it runs in float.

    In a QDQ model every op sits between DequantizeLinear (inputs) and QuantizeLinear
    (outputs), so its tensors are float in the file; onnxruntime drops the pair around data
    movement (Transpose, Reshape, ...) and fuses it into int8 kernels (QLinearConv, QGemm,
    ...), which then read and write the int8 tensors. A layer counts at the quantised width
    when it is one of those ops, every activation input comes from a DequantizeLinear and every
    output feeds QuantizeLinear nodes only."""
    if node.domain not in DEFAULT_DOMAINS or not inputs or not outputs:
        return None
    if node.op_type not in MOVE_OPS and node.op_type not in INT8_KERNEL_OPS:
        return None
    bits = []
    for t in inputs:
        src = producers.get(t)
        if src is None or src.op_type != "DequantizeLinear" or not src.input:
            return None
        bits.append(bits_of(dtype_of.get(src.input[0], TensorProto.FLOAT)))
    for o in outputs:
        readers = consumers.get(o, ())
        if not readers or any(r.op_type != "QuantizeLinear" for r in readers):
            return None
    return max(bits)


def _make_layer(
    node: onnx.NodeProto,
    index: int,
    dynamic: set[str],
    shape_of: dict[str, Shape | None],
    dtype_of: dict[str, int],
    producers: dict[str, onnx.NodeProto],
    consts: Constants,
    used_names: set[str],
    needed: set[str] | None = None,
    reasons: Mapping[str, str] | None = None,
    seen_weights: dict[str, str] | None = None,
    consumers: Mapping[str, Sequence[onnx.NodeProto]] | None = None,
) -> Layer:
    default_domain = node.domain in DEFAULT_DOMAINS
    op = node.op_type if default_domain else f"{node.domain}.{node.op_type}"
    lname = node.name or f"{node.op_type.lower()}_{index}"
    if lname in used_names:
        k = 1
        while f"{lname}_{k}" in used_names:
            k += 1
        lname = f"{lname}_{k}"
    used_names.add(lname)

    def shape(t: str, role: str) -> Shape:
        s = shape_of.get(t)
        if s is None:
            src = producers.get(t)
            by = f" (output of node {src.name or src.op_type!r}, op {src.op_type})" if src else ""
            why = (reasons or {}).get(src.name) if src is not None and src.name else None
            cause = f": {why}" if why else "; give the model value_info for it"
            raise OnnxImportError(
                f"cannot determine the shape of tensor {t!r}{by}, {role} of node "
                f"{node.name or node.op_type!r} ({op}){cause}"
            )
        return s

    attrs = node_attrs(node)
    config = CONFIG_INPUTS.get(node.op_type, {}) if default_domain else {}
    eltwise = default_domain and node.op_type in ELTWISE_OPS
    inputs: list[str] = []
    weights: list[str] = []
    scalars: list[tuple[int, float | None]] = []
    for pos, t in enumerate(node.input):
        if not t:
            continue
        if t in dynamic:
            inputs.append(t)
        elif pos in config:
            arr = consts.value(t)
            if arr is not None:
                value = config_value(config[pos], arr)
                if value is not None:
                    attrs[config[pos]] = value
        elif eltwise and shape_of.get(t) is not None and math.prod(shape_of[t] or ()) == 1:
            # x * 0.5, x + 3: a scalar operand of arithmetic is a constant, not a parameter
            # (framework parameter counts do not include it).
            arr = consts.value(t)
            scalars.append((pos, None if arr is None else float(arr.reshape(-1)[0])))
        else:
            weights.append(t)
    if scalars:
        attrs["scalar_inputs"] = tuple(scalars)
    outputs = [o for o in node.output if o]
    if needed is not None:
        # Trailing outputs nothing reads and whose shape is unknown (an unused Dropout mask
        # of an old file, optional statistics outputs) are not part of the network: drop them
        # rather than fail. Earlier ones keep their place (outputs are positional).
        while len(outputs) > 1 and outputs[-1] not in needed and shape_of.get(outputs[-1]) is None:
            outputs.pop()
    in_shapes = tuple(shape(t, "an input") for t in inputs)
    out_shapes = tuple(shape(o, "an output") for o in outputs)
    w_shapes = tuple(shape(t, "a weight") for t in weights)

    if node.op_type in WINDOW_OPS and default_domain and in_shapes:
        normalise_window(node.op_type, attrs, in_shapes[0], w_shapes, out_shapes[0])
    if default_domain:
        _normalise_op(node.op_type, attrs, in_shapes, out_shapes)
        operands = [shape_of.get(t) for t in node.input[:2] if t]
        _check_consistent(node.op_type, lname, attrs, in_shapes, w_shapes, out_shapes, operands)

    act_type = dtype_of.get(inputs[0] if inputs else outputs[0], TensorProto.FLOAT)
    qdq = _qdq_bits(node, inputs, outputs, producers, consumers or {}, dtype_of)
    layer = Layer(
        name=lname,
        op=op,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        input_shapes=in_shapes,
        output_shapes=out_shapes,
        attrs=attrs,
        weight_shapes=w_shapes,
        weight_bits=_weight_bits(weights[0], dtype_of, producers) if weights else 32,
        act_bits=bits_of(act_type) if qdq is None else qdq,
    )
    try:
        apply_cost(layer)
    except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
        # The op has a rule but this instance does not fit it (e.g. a Conv whose weights are
        # computed from activations): keep it, reported as unknown, never costed as zero.
        log.warning("layer %s (%s) does not fit its cost rule (%s): kept unknown", lname, op, exc)
        layer.op = ""  # no rule: counted as an unknown op, then named again
        apply_cost(layer)
        layer.op = op
    for t, w_shape in zip(weights, w_shapes, strict=True):
        node_of = producers.get(t)
        if node_of is not None and node_of.op_type != "Constant":
            # A weight computed at run time: its parameters are the stored values it is
            # computed from (ViT's class token, not its batch-sized expansion).
            layer.params += consts.stored_params(t) - math.prod(w_shape)
    if seen_weights is not None:
        # A stored tensor several layers read (ALBERT's shared layer, a tied LM head) is one
        # set of parameters: the first reader counts it.
        shared = [t for t in weights if t in seen_weights and t not in producers]
        for t in shared:
            layer.params -= consts.stored_params(t)
        if shared and len(shared) == len(weights):
            layer.attrs["shared_with"] = seen_weights[shared[0]]
        for t in weights:
            seen_weights.setdefault(t, lname)
    return layer


def _normalise_op(
    op: str, attrs: dict[str, Any], ins: Sequence[Shape], outs: Sequence[Shape]
) -> None:
    """Bring op-specific attributes to the forms the IR's shape and cost rules read."""
    rank = len(ins[0]) if ins else 0
    if op == "Split" and ins:
        axis = int(attrs.get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        attrs["axis"] = int(attrs.get("axis", 0))
        attrs["split"] = tuple(int(s[axis]) for s in outs)
        attrs.pop("num_outputs", None)
    elif op == "Slice" and "starts" in attrs:
        n = len(attrs["starts"])
        attrs["axes"] = tuple(attrs.get("axes") or range(n))
        attrs["steps"] = tuple(attrs.get("steps") or (1,) * n)
    elif op == "Pad":
        pads = attrs.get("pads")
        axes = attrs.pop("axes", None)
        if pads is not None and axes is not None and rank:
            full = [0] * (2 * rank)
            k = len(axes)
            for j, ax in enumerate(axes):
                ax = ax + rank if ax < 0 else ax
                full[ax], full[ax + rank] = pads[j], pads[j + k]
            attrs["pads"] = tuple(full)
        elif pads is None and ins:
            attrs["pads"] = (0,) * (2 * rank)
        attrs.setdefault("mode", "constant")
    elif op in ("Resize", "Upsample"):
        attrs.pop("roi", None)
        axes = attrs.pop("axes", None)
        for key in ("scales", "sizes"):
            vals = attrs.get(key)
            if not vals:
                attrs.pop(key, None)
                continue
            if axes is not None and rank:
                whole: list[Any] = list(ins[0]) if key == "sizes" else [1.0] * rank
                for j, ax in enumerate(axes):
                    whole[ax + rank if ax < 0 else ax] = vals[j]
                vals = tuple(whole)
            attrs[key] = tuple(float(v) for v in vals) if key == "scales" else tuple(vals)
        if "scales" not in attrs and "sizes" not in attrs and outs:
            attrs["sizes"] = tuple(outs[0])
        attrs.setdefault("mode", "nearest")
    elif op == "Concat" or op == "Flatten":
        attrs["axis"] = int(attrs.get("axis", 1))
    elif op == "Reshape" and "shape" not in attrs and outs:
        attrs["shape"] = tuple(outs[0])
    elif op in ("Clip",):
        for key in ("min", "max"):
            if key in attrs and attrs[key] is not None:
                attrs[key] = float(attrs[key])


def _check_consistent(
    op: str,
    name: str,
    attrs: Mapping[str, Any],
    ins: Sequence[Shape],
    weights: Sequence[Shape],
    outs: Sequence[Shape],
    operands: Sequence[Shape | None] = (),
) -> None:
    """Refuse what onnx's shape inference lets through but no runtime can execute.

    onnx infers a Conv's output from its weight without checking the input channels, and a
    Reshape's from its target without checking the element count; such a file would import
    with made-up costs, so it is an :class:`OnnxImportError` naming the node instead.
    """
    if op == "Reshape" and ins and outs and math.prod(ins[0]) != math.prod(outs[0]):
        raise OnnxImportError(
            f"node {name!r} (Reshape): target shape {outs[0]} has {math.prod(outs[0])} "
            f"elements, its input {ins[0]} has {math.prod(ins[0])}"
        )
    if op in ("Gemm", "MatMul") and len(operands) == 2:
        a, b = operands
        if a and b:  # the first two inputs by position, activations or weights
            if op == "Gemm":
                k_a = a[0] if attrs.get("transA") else a[-1]
                k_b = b[-1] if attrs.get("transB") else b[0]
            else:
                k_a, k_b = a[-1], (b[-2] if len(b) >= 2 else b[0])
            if k_a != k_b:
                raise OnnxImportError(
                    f"node {name!r} ({op}): operands {a} and {b} do not multiply "
                    f"(inner dimensions {k_a} and {k_b})"
                )
    if op == "Conv" and ins and weights and len(ins[0]) >= 3 and len(weights[0]) >= 2:
        groups = int(attrs.get("groups", 1))
        if weights[0][1] * groups != ins[0][1]:
            raise OnnxImportError(
                f"node {name!r} (Conv): weight {weights[0]} with group={groups} expects "
                f"{weights[0][1] * groups} input channels, the input {ins[0]} has {ins[0][1]}"
            )


#: The import's public API (re-exported from the modules of its steps).
__all__ = [
    "fix_model_inputs",
    "fixed_input_shapes",
    "from_onnx",
    "load_model",
    "load_runnable",
    "resolve_auto_pad",
]
