"""Shape and cost rules per op type.

One table, :data:`RULES`, says for every op latlab understands which *kind* of layer it is
(the category layer-wise models are fitted per), how to infer its output shapes when a network
is built directly (``shape``; ONNX import uses ONNX shape inference instead) and how much it
costs (``cost``: MACs, FLOPs, parameters). Bytes are derived the same way for every op from the
tensor sizes and bit widths, in :func:`apply_cost`.

Counting conventions (documented because papers differ):

* MACs: multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul only. FLOPs = 2·MACs for those,
  plus one FLOP per output element for a bias.
* Element-wise and activation ops: FLOPs per output element (Relu 1, Sigmoid/Tanh 4,
  HardSigmoid 3, HardSwish 4, ...). Pooling: one FLOP per window element per output.
* Parameters: learnable values, each counted once: a layer whose weights are another
  layer's (``attrs["weight_of"]``) or constant buffers adds none, and ``attrs["stored_params"]``
  overrides the count where the stored values differ from the weights the layer reads.
  BatchNormalization counts scale and bias (2·C) as the
  published parameter counts do; its running mean/var are included in ``weight_bytes``.
* Data-movement ops (Concat, Reshape, Transpose, Slice, Pad, ...) cost 0 FLOPs but their bytes
  are counted: they are *known* ops, not unknown ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from latlab.encoders.ir import Layer, Shape, numel
from latlab.registry import Registry

ShapeFn = Callable[[Sequence[Shape], dict[str, Any], Sequence[Shape]], tuple[Shape, ...]]
CostFn = Callable[[Layer], tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class OpRule:
    """How latlab understands one op type."""

    kind: str
    cost: CostFn
    shape: ShapeFn | None = None


def _is_rule(obj: object) -> bool:
    return isinstance(obj, OpRule)


#: op type -> its rule. The ONNX ops' rules are defined below, in this module; an extension's
#: ops are lazy ``"module:attr"`` entries imported when a layer of the op is first costed (the
#: binary layers' rules live in :mod:`latlab.encoders.binary`); plug-ins: the ``latlab.ops``
#: entry-point group.
RULES: Registry[OpRule] = Registry(
    "op rule",
    group="latlab.ops",
    check=_is_rule,
    entries={
        "BinaryGemm": "latlab.encoders.binary:BINARY_GEMM_RULE",
        "BinaryConv": "latlab.encoders.binary:BINARY_CONV_RULE",
    },
)


def register_op(op: str, rule: OpRule | str) -> None:
    """Add or replace the rule of ``op``: an :class:`OpRule`, or ``"module:attr"`` naming one
    (imported when a layer of ``op`` is first costed)."""
    RULES.register(op, rule)


# --------------------------------------------------------------------------- helpers


def _pair(v: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)


def conv_output_size(
    size: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False
) -> int:
    """Output length of a sliding window (ONNX/PyTorch convention)."""
    eff = d * (k - 1) + 1
    span = size + p0 + p1 - eff
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p0:  # PyTorch: last window must start inside the input
        out -= 1
    return out


def _window_shape(x: Shape, attrs: dict[str, Any], channels: int) -> Shape:
    k = attrs["kernel"]
    nd = len(k)
    s = _pair(attrs.get("stride", 1), nd)
    d = _pair(attrs.get("dilation", 1), nd)
    pads = attrs.get("pads", (0,) * (2 * nd))
    ceil = bool(attrs.get("ceil_mode", 0))
    spatial = tuple(
        conv_output_size(x[2 + i], k[i], s[i], pads[i], pads[i + nd], d[i], ceil) for i in range(nd)
    )
    return (x[0], channels, *spatial)


def broadcast(*shapes: Shape) -> Shape:
    """Numpy broadcasting of shapes (ONNX multidirectional broadcasting)."""
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(nd):
        dims = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------------------- shape rules


def _shape_conv(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    return (_window_shape(ins[0], a, ws[0][0]),)


def _shape_convtranspose(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x, k = ins[0], a["kernel"]
    nd = len(k)
    s = _pair(a.get("stride", 1), nd)
    pads = a.get("pads", (0,) * (2 * nd))
    outpad = _pair(a.get("output_padding", 0), nd)
    spatial = tuple(
        s[i] * (x[2 + i] - 1) + outpad[i] + k[i] - pads[i] - pads[i + nd] for i in range(nd)
    )
    return ((x[0], ws[0][1] * int(a.get("groups", 1)), *spatial),)


def _shape_pool(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    return (_window_shape(ins[0], a, ins[0][1]),)


def _shape_global_pool(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    return ((x[0], x[1], *([1] * (len(x) - 2))),)


def _shape_same(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    return (ins[0],)


def _shape_broadcast(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    return (broadcast(*ins, *ws),)


def _shape_gemm(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    x = ins[0]
    m = x[1] if a.get("transA") else x[0]
    b = ws[0] if ws else ins[1]
    n = b[0] if a.get("transB") else b[1]
    return ((m, n),)


def _shape_matmul(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    b = ws[0] if ws else ins[1]
    batch = broadcast(x[:-2], b[:-2]) if len(x) > 2 or len(b) > 2 else ()
    return ((*batch, x[-2] if len(x) > 1 else 1, b[-1]),)


def _shape_concat(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    # Weights are operands too (ViT's class token concatenated to the patch tokens).
    axis = _norm_axis(int(a.get("axis", 1)), len(ins[0]))
    out = list(ins[0])
    out[axis] = sum(s[axis] for s in (*ins, *ws))
    return (tuple(out),)


def _shape_gather(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    """Gather along ``axis``: an embedding (weight table indexed by the activation) or a
    selection with constant ``indices`` (``qkv[0]``, the class token)."""
    if ws:  # embedding: data is the table, the activation holds the indices
        table, idx = ws[0], ins[0]
        axis = _norm_axis(int(a.get("axis", 0)), len(table))
        return ((*table[:axis], *idx, *table[axis + 1 :]),)
    x = ins[0]
    axis = _norm_axis(int(a.get("axis", 0)), len(x))
    indices = a.get("indices", 0)
    idx_shape: Shape = () if isinstance(indices, int) else (len(indices),)
    return ((*x[:axis], *idx_shape, *x[axis + 1 :]),)


def _shape_flatten(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    axis = _norm_axis(int(a.get("axis", 1)), len(x))
    return ((numel(x[:axis]), numel(x[axis:])),)


def _shape_reshape(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    target = [x[i] if d == 0 else d for i, d in enumerate(a["shape"])]
    if -1 in target:
        known = numel(tuple(d for d in target if d != -1))
        target[target.index(-1)] = numel(x) // known
    return (tuple(target),)


def _shape_transpose(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    perm = a.get("perm") or tuple(reversed(range(len(x))))
    return (tuple(x[p] for p in perm),)


def _shape_split(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    x = ins[0]
    axis = _norm_axis(int(a.get("axis", 0)), len(x))
    outs = []
    for size in a["split"]:
        s = list(x)
        s[axis] = size
        outs.append(tuple(s))
    return tuple(outs)


def _shape_slice(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    x = list(ins[0])
    steps = a.get("steps") or [1] * len(a["axes"])
    for st, en, ax, step in zip(a["starts"], a["ends"], a["axes"], steps, strict=True):
        ax = _norm_axis(ax, len(x))
        n = len(range(*slice(st, en, step).indices(x[ax])))
        x[ax] = n
    return (tuple(x),)


def _shape_pad(ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]) -> tuple[Shape, ...]:
    x = ins[0]
    p = a["pads"]
    r = len(x)
    return (tuple(x[i] + p[i] + p[i + r] for i in range(r)),)


def _shape_resize(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    if a.get("sizes"):
        return (tuple(int(s) for s in a["sizes"]),)
    return (tuple(math.floor(d * s) for d, s in zip(x, a["scales"], strict=True)),)


def _shape_reduce(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    x = ins[0]
    axes = {_norm_axis(ax, len(x)) for ax in a.get("axes", range(len(x)))}
    if a.get("keepdims", 1):
        return (tuple(1 if i in axes else d for i, d in enumerate(x)),)
    return (tuple(d for i, d in enumerate(x) if i not in axes),)


# --------------------------------------------------------------------------- cost rules


def _cost_conv(layer: Layer) -> tuple[int, int, int]:
    w = layer.weight_shapes[0]
    macs = numel(layer.output_shape) * numel(w[1:])
    bias = numel(layer.weight_shapes[1]) if len(layer.weight_shapes) > 1 else 0
    flops = 2 * macs + (numel(layer.output_shape) if bias else 0)
    return macs, flops, numel(w) + bias


def _cost_convtranspose(layer: Layer) -> tuple[int, int, int]:
    w = layer.weight_shapes[0]  # (C_in, C_out/groups, k...)
    macs = numel(layer.input_shape) * numel(w[1:])
    bias = numel(layer.weight_shapes[1]) if len(layer.weight_shapes) > 1 else 0
    return macs, 2 * macs + (numel(layer.output_shape) if bias else 0), numel(w) + bias


def _cost_gemm(layer: Layer) -> tuple[int, int, int]:
    a = layer.input_shape
    k = a[0] if layer.attrs.get("transA") else a[-1]
    macs = numel(layer.output_shape) * k
    params = sum(numel(w) for w in layer.weight_shapes)
    bias = numel(layer.output_shape) if len(layer.weight_shapes) > 1 or len(layer.inputs) > 2 else 0
    return macs, 2 * macs + bias, params


def _cost_matmul(layer: Layer) -> tuple[int, int, int]:
    k = layer.input_shape[-1]
    macs = numel(layer.output_shape) * k
    return macs, 2 * macs, sum(numel(w) for w in layer.weight_shapes)


def _per_output(factor: float) -> CostFn:
    def cost(layer: Layer) -> tuple[int, int, int]:
        flops = int(factor * sum(numel(s) for s in layer.output_shapes))
        return 0, flops, sum(numel(w) for w in layer.weight_shapes)

    return cost


def _cost_eltwise(layer: Layer) -> tuple[int, int, int]:
    operands = len(layer.input_shapes) + len(layer.weight_shapes)
    flops = numel(layer.output_shape) * max(operands - 1, 1)
    return 0, flops, sum(numel(w) for w in layer.weight_shapes)


def _cost_bn(layer: Layer) -> tuple[int, int, int]:
    channels = layer.input_shape[1] if len(layer.input_shape) > 1 else layer.input_shape[0]
    return 0, 2 * numel(layer.output_shape), 2 * channels


def _cost_norm(layer: Layer) -> tuple[int, int, int]:
    # LayerNorm/InstanceNorm: mean, variance, normalise, scale, shift ~ 5 FLOPs per element.
    return 0, 5 * numel(layer.output_shape), sum(numel(w) for w in layer.weight_shapes)


def _cost_lrn(layer: Layer) -> tuple[int, int, int]:
    size = int(layer.attrs.get("size", 5))
    # per element: a window of `size` squares summed, then scale, pow and divide.
    return 0, numel(layer.output_shape) * (size + 3), 0


def _cost_window(layer: Layer) -> tuple[int, int, int]:
    return 0, numel(layer.output_shape) * numel(tuple(layer.attrs["kernel"])), 0


def _cost_reduce_input(layer: Layer) -> tuple[int, int, int]:
    return 0, numel(layer.input_shape), 0


def _cost_free(layer: Layer) -> tuple[int, int, int]:
    return 0, 0, sum(numel(w) for w in layer.weight_shapes)


def _cost_resize(layer: Layer) -> tuple[int, int, int]:
    mode = str(layer.attrs.get("mode", "nearest"))
    per = {"nearest": 0, "linear": 4, "cubic": 16}.get(mode, 4)
    return 0, per * numel(layer.output_shape), 0


def unknown_cost(layer: Layer) -> tuple[int, int, int]:
    """Cost of an op without a rule: parameters are countable, compute is not (known=False)."""
    return 0, 0, sum(numel(w) for w in layer.weight_shapes)


for _op in ("Conv",):
    RULES[_op] = OpRule("conv", _cost_conv, _shape_conv)
RULES["ConvTranspose"] = OpRule("conv", _cost_convtranspose, _shape_convtranspose)
RULES["Gemm"] = OpRule("fc", _cost_gemm, _shape_gemm)
RULES["MatMul"] = OpRule("fc", _cost_matmul, _shape_matmul)
RULES["BatchNormalization"] = OpRule("norm", _cost_bn, _shape_same)
RULES["LRN"] = OpRule("norm", _cost_lrn, _shape_same)
for _op in ("LayerNormalization", "InstanceNormalization"):
    RULES[_op] = OpRule("norm", _cost_norm, _shape_same)
for _op, _f in (
    ("Relu", 1), ("LeakyRelu", 2), ("PRelu", 2), ("Clip", 1), ("Sign", 1), ("Abs", 1),
    ("Neg", 1), ("Sigmoid", 4), ("Tanh", 4), ("HardSigmoid", 3), ("HardSwish", 4),
    ("Elu", 4), ("Selu", 5), ("Softplus", 4), ("Gelu", 8), ("Erf", 4), ("Exp", 1),
    ("Log", 1), ("Sqrt", 1), ("Reciprocal", 1), ("Mish", 8), ("Swish", 5),
):  # fmt: skip
    RULES[_op] = OpRule("act", _per_output(_f), _shape_same)
RULES["Softmax"] = OpRule("softmax", _per_output(3), _shape_same)
RULES["LogSoftmax"] = OpRule("softmax", _per_output(4), _shape_same)
for _op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Pow", "Mean"):
    RULES[_op] = OpRule("eltwise", _cost_eltwise, _shape_broadcast)
for _op in ("MaxPool", "AveragePool", "LpPool"):
    RULES[_op] = OpRule("pool", _cost_window, _shape_pool)
for _op in ("GlobalAveragePool", "GlobalMaxPool"):
    RULES[_op] = OpRule("gpool", _cost_reduce_input, _shape_global_pool)
for _op in ("ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin", "ReduceL2"):
    RULES[_op] = OpRule("gpool", _cost_reduce_input, _shape_reduce)
RULES["Concat"] = OpRule("concat", _cost_free, _shape_concat)
RULES["Flatten"] = OpRule("data", _cost_free, _shape_flatten)
RULES["Reshape"] = OpRule("data", _cost_free, _shape_reshape)
RULES["Transpose"] = OpRule("data", _cost_free, _shape_transpose)
RULES["Split"] = OpRule("data", _cost_free, _shape_split)
RULES["Slice"] = OpRule("data", _cost_free, _shape_slice)
RULES["Pad"] = OpRule("data", _cost_free, _shape_pad)
RULES["Resize"] = OpRule("data", _cost_resize, _shape_resize)
RULES["Upsample"] = OpRule("data", _cost_resize, _shape_resize)
for _op in (
    "Identity", "Dropout", "Squeeze", "Unsqueeze", "Expand", "Tile", "Cast",
    "Shape", "Constant", "ConstantOfShape", "Range", "DepthToSpace", "SpaceToDepth",
):  # fmt: skip
    RULES[_op] = OpRule(
        "data", _cost_free, _shape_same if _op in ("Identity", "Dropout", "Cast") else None
    )

RULES["Gather"] = OpRule("data", _cost_free, _shape_gather)

# Ops real-world ONNX files apply to activations (masks in transformers, quantize/dequantize
# pairs, index and scatter ops of detection heads), so that imports do not report them as
# unknown. Comparisons and selections cost one FLOP per output element like arithmetic.
for _op in ("Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or",
            "Xor", "Not", "Mod", "BitShift"):  # fmt: skip
    RULES[_op] = OpRule("eltwise", _cost_eltwise, _shape_broadcast)
for _op, _f in (
    ("Floor", 1), ("Ceil", 1), ("Round", 1), ("IsNaN", 1), ("IsInf", 1), ("CumSum", 1),
    ("QuantizeLinear", 2), ("DequantizeLinear", 2), ("ThresholdedRelu", 1), ("Shrink", 2),
    ("Celu", 4), ("Sin", 4), ("Cos", 4),
):  # fmt: skip
    RULES[_op] = OpRule("act", _per_output(_f), _shape_same)
for _op in ("ReduceProd", "ReduceL1", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
    RULES[_op] = OpRule("gpool", _cost_reduce_input, _shape_reduce)
for _op in ("ArgMax", "ArgMin"):
    RULES[_op] = OpRule("gpool", _cost_reduce_input, None)
RULES["GroupNormalization"] = OpRule("norm", _cost_norm, _shape_same)
for _op in ("GatherElements", "GatherND", "ScatterND", "ScatterElements", "Compress", "TopK",
            "NonZero", "Trilu", "ReverseSequence", "EyeLike", "Size"):  # fmt: skip
    RULES[_op] = OpRule("data", _cost_free, None)


def kind_of(op: str, attrs: dict[str, Any], input_shape: Shape) -> str:
    """Layer kind used by layer-wise models (``dwconv`` for depthwise convolutions)."""
    rule = RULES.get(op)
    if rule is None:
        return "other"
    if rule.kind == "conv" and op == "Conv":
        groups = int(attrs.get("groups", 1))
        if groups > 1 and len(input_shape) > 1 and groups == input_shape[1]:
            return "dwconv"
    return rule.kind


def apply_cost(layer: Layer) -> Layer:
    """Fill ``kind``, ``known`` and the counts of ``layer`` from its rule (in place)."""
    rule = RULES.get(layer.op)
    layer.kind = kind_of(layer.op, layer.attrs, layer.input_shape)
    if rule is None:
        layer.known = False
        layer.macs, layer.flops, layer.params = unknown_cost(layer)
    else:
        layer.known = True
        layer.macs, layer.flops, layer.params = rule.cost(layer)
    stored = layer.attrs.get("stored_params")
    if stored is not None:
        # Learnable values the weights come from, when they are not the weights themselves:
        # 0 for constant buffers (rotary tables, attention masks) and for weights shared
        # with another layer (``weight_of``: ALBERT, tied embeddings), the whole table for
        # the slice of a position table a sequence uses.
        layer.params = int(stored)
    elif layer.attrs.get("weight_of"):
        layer.params = 0
    act = layer.act_bits
    layer.bytes_read = sum(numel(s) for s in layer.input_shapes) * act // 8
    layer.bytes_written = sum(numel(s) for s in layer.output_shapes) * act // 8
    stored = sum(numel(w) for w in layer.weight_shapes)
    layer.weight_bytes = (stored * layer.weight_bits + 7) // 8
    return layer


def infer_shapes(
    op: str, input_shapes: Sequence[Shape], attrs: dict[str, Any], weight_shapes: Sequence[Shape]
) -> tuple[Shape, ...]:
    """Output shapes of ``op`` for the builder; raises KeyError for ops it cannot build."""
    rule = RULES.get(op)
    if rule is None or rule.shape is None:
        raise KeyError(f"latlab cannot infer shapes of op {op!r} when building a network directly")
    return rule.shape(input_shapes, attrs, weight_shapes)
