"""The tables the ONNX import shares (:mod:`latlab.encoders.onnx_import`): source types, which
inputs configure an op, attribute names, element bit widths."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import onnx
from onnx import TensorProto

ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto
InputShape = Sequence[int] | Mapping[str, Sequence[int]]

#: Initializers up to this many elements keep their values for shape inference (shape
#: tensors, scales, axes are tiny); larger ones are stripped to their type and shape.
SMALL_TENSOR = 4096

#: Constant values up to this many elements are copied into ``attrs`` (Gather indices, roi...).
MAX_ATTR_VALUES = 64

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

#: Ops whose outputs depend on the *shape* of their input only (static once inputs are fixed).
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})

#: Inputs (by position) that configure an op rather than parameterise it: their constant values
#: go into ``attrs`` under the given key and they are neither weights nor activations.
CONFIG_INPUTS: dict[str, dict[int, str]] = {
    "Reshape": {1: "shape"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "Clip": {1: "min", 2: "max"},
    "Split": {1: "split"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Expand": {1: "shape"},
    "Tile": {1: "repeats"},
    "TopK": {1: "k"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "CumSum": {1: "axis"},
    "Gather": {1: "indices"},
    "GatherElements": {1: "indices"},
    "GatherND": {1: "indices"},
    "ScatterND": {1: "indices"},
    "OneHot": {1: "depth", 2: "values"},
    "ConstantOfShape": {0: "shape"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "NonMaxSuppression": {
        2: "max_output_boxes_per_class",
        3: "iou_threshold",
        4: "score_threshold",
    },
    "CenterCropPad": {1: "shape", 2: "axes"},
    "QuantizeLinear": {1: "y_scale", 2: "y_zero_point"},
    "DequantizeLinear": {1: "x_scale", 2: "x_zero_point"},
}
for _op in (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
):  # fmt: skip
    CONFIG_INPUTS[_op] = {1: "axes"}

#: Config keys holding one number rather than a list.
SCALAR_CONFIG = frozenset(
    {
        "min", "max", "k", "ratio", "training_mode", "axis", "depth", "constant_value", "start",
        "limit", "delta", "max_output_boxes_per_class", "iou_threshold", "score_threshold",
        "x_scale", "y_scale", "x_zero_point", "y_zero_point",
    }
)  # fmt: skip

#: ONNX attribute names -> IR keys (everything else keeps its ONNX name).
ATTR_KEYS = {
    "kernel_shape": "kernel",
    "strides": "stride",
    "dilations": "dilation",
    "group": "groups",
}

#: Arithmetic ops whose scalar constant operands are kept in ``attrs["scalar_inputs"]`` as
#: ``(input position, value)`` rather than counted as weights.
ELTWISE_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod", "Where", "Equal",
     "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"}
)  # fmt: skip

WINDOW_OPS = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"})

ELEMENT_BITS: dict[int, int] = {
    TensorProto.FLOAT: 32,
    TensorProto.DOUBLE: 64,
    TensorProto.FLOAT16: 16,
    TensorProto.BFLOAT16: 16,
    TensorProto.INT8: 8,
    TensorProto.UINT8: 8,
    TensorProto.INT16: 16,
    TensorProto.UINT16: 16,
    TensorProto.INT32: 32,
    TensorProto.UINT32: 32,
    TensorProto.INT64: 64,
    TensorProto.UINT64: 64,
    TensorProto.BOOL: 8,
}
for _name, _bits in (
    ("FLOAT8E4M3FN", 8), ("FLOAT8E4M3FNUZ", 8), ("FLOAT8E5M2", 8), ("FLOAT8E5M2FNUZ", 8),
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4),
):  # fmt: skip
    if hasattr(TensorProto, _name):
        ELEMENT_BITS[getattr(TensorProto, _name)] = _bits


def bits_of(elem_type: int) -> int:
    """Bit width of an ONNX element type (32 when unknown)."""
    return ELEMENT_BITS.get(elem_type, 32)


def has_data(t: onnx.TensorProto) -> bool:
    """Whether an initializer holds its values (not a stripped or external-data tensor)."""
    # HasField/len, not truthiness: reading ``raw_data`` would copy the weights into Python.
    return (
        t.HasField("raw_data")
        or len(t.float_data) > 0
        or len(t.int32_data) > 0
        or len(t.int64_data) > 0
        or len(t.double_data) > 0
        or len(t.uint64_data) > 0
        or len(t.string_data) > 0
        or math.prod(t.dims) == 0
    )
