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
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Layer, NetworkGraph, Shape
from latlab.encoders.ops import apply_cost, conv_output_size
from latlab.encoders.quantize import INT8_KERNEL_OPS, MOVE_OPS
from latlab.errors import OnnxImportError

log = logging.getLogger(__name__)

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

_BITS: dict[int, int] = {
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
        _BITS[getattr(TensorProto, _name)] = _bits


def bits_of(elem_type: int) -> int:
    """Bit width of an ONNX element type (32 when unknown)."""
    return _BITS.get(elem_type, 32)


# --------------------------------------------------------------------------- loading


def load_model(source: ModelSource, *, load_external_data: bool = False) -> onnx.ModelProto:
    """Read an ONNX model from a path, serialized bytes or a ``ModelProto`` (returned as is).

    Raises :class:`OnnxImportError` naming the file when it is missing or not a valid model.
    """
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes | bytearray):
        try:
            model = onnx.load_model_from_string(bytes(source))
        except Exception as exc:
            raise OnnxImportError(f"corrupt ONNX model bytes: {_first_line(exc)}") from None
        _require_graph(model, "ONNX model bytes")
        return model
    path = Path(os.fspath(source))
    if not path.exists():
        raise OnnxImportError(f"ONNX file not found: {path}")
    if path.is_dir():
        raise OnnxImportError(f"ONNX path is a directory, not a file: {path}")
    try:
        if load_external_data or path.suffix.lower() in TEXT_SUFFIXES:
            model = onnx.load(str(path), load_external_data=load_external_data)
        else:
            model = _parse_mapped(path)
    except FileNotFoundError as exc:  # external data named by the file is missing
        raise OnnxImportError(
            f"external weights of ONNX file {path} are missing: {exc.filename or exc}"
        ) from None
    except Exception as exc:
        raise OnnxImportError(f"corrupt ONNX file {path}: {_first_line(exc)}") from None
    _require_graph(model, f"ONNX file {path}")
    return model


#: Files onnx.load reads as text formats rather than binary protobuf.
TEXT_SUFFIXES = frozenset({".onnxtxt", ".txtpb", ".textproto", ".json"})


def _parse_mapped(path: Path) -> onnx.ModelProto:
    """Parse a binary model from a memory map of the file.

    ``onnx.load`` reads the whole file into a bytes object and then parses it: two copies of
    every weight. Parsing from the map skips the first one, which halves the load time of a
    100 MB ResNet-50 (see benchmarks/bench_ir.py).
    """
    import mmap

    model = onnx.ModelProto()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
            model.ParseFromString(view)  # copies into the message: nothing refers to the map
    return model


def load_runnable(
    path: str | os.PathLike[str],
    input_shape: InputShape | None = None,
    *,
    batch: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """The model of an ONNX file ready to run: external weights loaded, dynamic inputs fixed.

    Weights the file names but does not hold (an external data file that was not shipped, a
    tensor saved without its data) are filled with seeded random values of the right type and
    shape, with a warning: latency does not depend on weight values, so the file can still be
    measured. A missing non-float tensor (a shape, indices) cannot be invented and raises
    :class:`OnnxImportError` naming it.
    """
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor

    model = load_model(path, load_external_data=False)
    base = Path(os.fspath(path)).parent
    rng = np.random.default_rng(seed)
    filled: list[str] = []
    for t in _all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            info = ExternalDataInfo(t)
            location = base / info.location
            if location.is_file():
                try:
                    load_external_data_for_tensor(t, str(base))
                    continue
                except Exception as exc:
                    log.debug("external data of %s unreadable: %s", t.name, exc)
        elif _has_data(t):
            continue
        _fill_random(t, rng, path)
        filled.append(t.name)
    if filled:
        log.warning(
            "ONNX file %s lacks the values of %d weight tensor(s) (e.g. %s): filled with "
            "seeded random values, which do not change latency",
            path,
            len(filled),
            filled[0],
        )
    fix_model_inputs(model, input_shape, batch)
    return model


def _all_tensors(model: onnx.ModelProto) -> Iterable[onnx.TensorProto]:
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


_RANDOM_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
_RANDOM_INTS = {TensorProto.INT8, TensorProto.UINT8}


def _fill_random(t: onnx.TensorProto, rng: np.random.Generator, path: Any) -> None:
    shape = tuple(int(d) for d in t.dims)
    if t.data_type in _RANDOM_FLOATS:
        arr = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if t.data_type == TensorProto.BFLOAT16:
            data = helper.make_tensor(t.name, t.data_type, shape, arr.reshape(-1).tolist())
        else:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            data = numpy_helper.from_array(arr.astype(dtype), t.name)
    elif t.data_type in _RANDOM_INTS:
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        low = 0 if t.data_type == TensorProto.UINT8 else -8
        data = numpy_helper.from_array(rng.integers(low, 8, shape).astype(dtype), t.name)
    else:
        raise OnnxImportError(
            f"ONNX file {path} lacks the values of tensor {t.name!r} "
            f"({TensorProto.DataType.Name(t.data_type)}), which cannot be invented: "
            "it cannot run"
        )
    t.CopyFrom(data)


def _require_graph(model: onnx.ModelProto, what: str) -> None:
    # protobuf parses many non-ONNX byte strings into an empty message without complaint.
    if not model.HasField("graph") or (len(model.graph.node) == 0 and not model.graph.output):
        raise OnnxImportError(f"corrupt or empty {what}: it holds no graph")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- input shapes


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Dims of a value info: ints where static, the symbol (or None) where dynamic."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))  # 0 is a static empty dimension, not a dynamic one
        else:
            out.append(d.dim_param or None)
    return out


def activation_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old files list weights as inputs too)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def fixed_input_shapes(
    model: onnx.ModelProto, input_shape: InputShape | None = None, batch: int = 1
) -> dict[str, Shape]:
    """Static shape of every activation input, from the file and ``input_shape``.

    ``input_shape`` is one shape (for a single-input model, or applied to the first input) or a
    mapping ``name -> shape``. A shape one dimension shorter than the input's rank gets the batch
    prepended. A symbolic leading (batch) dimension takes ``batch`` when no shape is given; any
    other dynamic dimension without a given shape raises :class:`OnnxImportError` naming the
    input and its dynamic dimensions. A given dimension that contradicts a static one in the
    file raises too (the file's constants, such as Reshape targets, would no longer fit).
    """
    inputs = activation_inputs(model)
    given: dict[str, Sequence[int]] = {}
    if isinstance(input_shape, Mapping):
        names = {vi.name for vi in inputs}
        for key in input_shape:
            if key not in names:
                raise OnnxImportError(
                    f"input_shape names input {key!r}, which the model does not have "
                    f"(inputs: {', '.join(sorted(names)) or 'none'})"
                )
        given = dict(input_shape)
    elif input_shape is not None:
        if not inputs:
            raise OnnxImportError("input_shape given but the model has no inputs")
        dynamic = [vi.name for vi in inputs if _is_dynamic(_dims(vi))]
        if len(dynamic) > 1:
            raise OnnxImportError(
                f"the model has several inputs with dynamic dimensions ({', '.join(dynamic)}): "
                "give input_shape as a mapping from input name to shape"
            )
        target = dynamic[0] if dynamic else inputs[0].name
        given = {target: input_shape}

    shapes: dict[str, Shape] = {}
    for vi in inputs:
        dims = _dims(vi)
        if dims is None:
            if vi.name not in given:
                raise OnnxImportError(
                    f"input {vi.name!r} has no shape in the model: give the input shape "
                    "(--input-shape on the command line, input_shape= in Python)"
                )
            dims = [None] * len(given[vi.name])
        shapes[vi.name] = _fix_dims(vi.name, dims, given.get(vi.name), batch)
    return shapes


def _is_dynamic(dims: list[int | str | None] | None) -> bool:
    return dims is None or any(not isinstance(d, int) for d in dims)


def _fix_dims(
    name: str, dims: list[int | str | None], given: Sequence[int] | None, batch: int
) -> Shape:
    if given is not None:
        g = [int(d) for d in given]
        if len(g) == len(dims) - 1:
            lead = dims[0] if isinstance(dims[0], int) else batch
            g = [int(lead), *g]
        if len(g) != len(dims):
            raise OnnxImportError(
                f"input_shape {tuple(given)} for input {name!r} has rank {len(g)}, "
                f"the model's input has rank {len(dims)} ({_show(dims)})"
            )
        if any(d < 1 for d in g):
            raise OnnxImportError(f"input_shape {tuple(given)} for input {name!r} must be positive")
        for i, (d, v) in enumerate(zip(dims, g, strict=True)):
            if isinstance(d, int) and d != v:
                shown = f"{tuple(given)}" + (
                    f" (with the batch prepended: {tuple(g)})" if len(given) != len(g) else ""
                )
                raise OnnxImportError(
                    f"input shape {shown} contradicts the static dimension {i} of input "
                    f"{name!r} ({_show(dims)})"
                )
        return tuple(g)
    empty = [i for i, d in enumerate(dims) if isinstance(d, int) and d < 1]
    if empty:
        raise OnnxImportError(
            f"input {name!r} has zero-sized dimension {empty[0]} in shape {_show(dims)}: an empty "
            "tensor has no latency to predict (fix the model's input shape)"
        )
    dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if dynamic == [0] and len(dims) > 0:
        return (int(batch), *(int(d) for d in dims[1:]))  # type: ignore[arg-type]
    if dynamic:
        shown = ", ".join(f"{i} ({dims[i] or '?'})" for i in dynamic)
        raise OnnxImportError(
            f"input {name!r} has dynamic dimensions {shown} in shape {_show(dims)}: "
            "give the input shape (--input-shape on the command line, input_shape= in Python)"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _show(dims: Sequence[int | str | None]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in dims) + ")"


def fix_model_inputs(
    model: onnx.ModelProto, input_shape: InputShape | None = None, batch: int = 1
) -> dict[str, Shape]:
    """Write the static input shapes into ``model`` (in place) so that it can run as measured.

    Returns the shapes (see :func:`fixed_input_shapes` for the rules and the errors).
    """
    shapes = fixed_input_shapes(model, input_shape, batch)
    for vi in model.graph.input:
        if vi.name in shapes:
            _set_shape(vi, shapes[vi.name])
    return shapes


def _set_shape(vi: onnx.ValueInfoProto, shape: Shape) -> None:
    tt = vi.type.tensor_type
    tt.shape.ClearField("dim")
    for d in shape:
        tt.shape.dim.add().dim_value = int(d)


# --------------------------------------------------------------------------- shape inference


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return 1


def _has_schema(node: onnx.NodeProto) -> bool:
    try:
        return bool(onnx.defs.has(node.op_type, node.domain))
    except Exception:  # pragma: no cover - defensive: onnx raises for odd domains
        return False


def _shape_model(
    model: onnx.ModelProto,
    nodes: Sequence[onnx.NodeProto],
    shapes: dict[str, Shape],
    folded: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A light copy of ``model`` for shape inference: big weights reduced to type + shape.

    Large initializers become graph inputs with their shape, so inference (and the copies it
    makes) never touches their bytes; small ones keep their values for data propagation. The
    file's own value_info is dropped (it may carry the old batch size) except around ops
    without a schema, whose output shapes inference cannot produce. ``folded`` constants
    (values computed by latlab) replace the nodes that produce them.
    """
    src = model.graph
    m = onnx.ModelProto()
    m.ir_version = max(int(model.ir_version), 4)
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    g = m.graph
    g.name = src.name
    folded = folded or {}
    if folded:
        nodes = [n for n in nodes if not any(o in folded for o in n.output)]
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())
    g.node.extend(nodes)  # sorted: inference walks the nodes once, in order
    init_names = set()
    for t in src.initializer:
        init_names.add(t.name)
        n = math.prod(t.dims)
        inline = t.data_location != TensorProto.EXTERNAL and _has_data(t)
        if inline and n <= SMALL_TENSOR:
            g.initializer.append(t)
        else:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for t in src.sparse_initializer:
        init_names.add(t.values.name)
        g.input.append(
            helper.make_tensor_value_info(t.values.name, t.values.data_type, list(t.dims))
        )
    for vi in src.input:
        if vi.name in init_names:
            continue
        copy = g.input.add()
        copy.CopyFrom(vi)
        if vi.name in shapes:
            _set_shape(copy, shapes[vi.name])
    custom_outputs = {o for node in src.node if not _has_schema(node) for o in node.output}
    for vi in src.output:
        copy = g.output.add()
        copy.CopyFrom(vi)
        if vi.name not in custom_outputs:
            copy.type.tensor_type.ClearField("shape")
    g.value_info.extend(vi for vi in src.value_info if vi.name in custom_outputs)
    return m


def _has_data(t: onnx.TensorProto) -> bool:
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


def _infer(model: onnx.ModelProto, label: str) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The model with inferred shapes, and the reasons strict inference gave per node name.

    Strict inference stops at the first problem, and many real files have a harmless one (a
    custom op, a loose type), so the lenient pass gives the shapes; the strict pass's reasons
    are kept so that a node left without a shape is reported with the cause onnx found.
    """
    try:
        return (
            onnx.shape_inference.infer_shapes(
                model, check_type=True, strict_mode=True, data_prop=True
            ),
            {},
        )
    except Exception as strict_exc:
        log.debug("strict shape inference of %s failed: %s", label, strict_exc)
        reasons = _inference_reasons(str(strict_exc))
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise OnnxImportError(
                f"shape inference failed for {label}: {_first_line(exc)}"
            ) from None
        return inferred, reasons


_REASON = re.compile(r"\(op_type:(?P<op>[^,]*), node name: (?P<node>[^)]*)\): (?P<why>[^\n]*)")


def _inference_reasons(text: str) -> dict[str, str]:
    """``node name -> reason`` from onnx's ``(op_type:Gemm, node name: fc): ...`` messages."""
    out: dict[str, str] = {}
    for m in _REASON.finditer(text):
        why = m["why"].replace("[ShapeInferenceError]", "").replace("[TypeInferenceError]", "")
        out.setdefault(m["node"].strip(), why.strip())
    return out


# --------------------------------------------------------------------------- attributes


def _attr_value(attr: onnx.AttributeProto) -> Any:
    kind = attr.type
    A = onnx.AttributeProto
    if kind == A.INT:
        return int(attr.i)
    if kind == A.FLOAT:
        return _f32(attr.f)
    if kind == A.STRING:
        return attr.s.decode("utf-8", "replace")
    if kind == A.INTS:
        return tuple(int(v) for v in attr.ints)
    if kind == A.FLOATS:
        return tuple(_f32(v) for v in attr.floats)
    if kind == A.STRINGS:
        return tuple(s.decode("utf-8", "replace") for s in attr.strings)
    if kind == A.TENSOR:
        return _small_array_value(numpy_helper.to_array(attr.t))
    return None  # graphs, sparse tensors, type protos: not features of a layer


def _f32(value: float) -> float:
    """A float32 attribute as the decimal it was written from (1e-05, not 9.9999997e-06)."""
    return float(f"{value:.7g}")


def _small_array_value(arr: np.ndarray) -> Any:
    if arr.size > MAX_ATTR_VALUES:
        return None
    if arr.ndim == 0:
        return arr.item()
    return tuple(arr.reshape(-1).tolist())


def _node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = _attr_value(attr)
        if value is not None:
            out[ATTR_KEYS.get(attr.name, attr.name)] = value
    return out


def resolve_auto_pad(
    auto_pad: str,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Explicit pads (begins then ends) for ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID."""
    nd = len(kernel)
    if auto_pad == "VALID":
        return (0,) * (2 * nd)
    begins, ends = [], []
    for i in range(nd):
        eff = dilation[i] * (kernel[i] - 1) + 1
        out = -(-in_spatial[i] // stride[i])
        total = max((out - 1) * stride[i] + eff - in_spatial[i], 0)
        small, big = total // 2, total - total // 2
        begins.append(big if auto_pad == "SAME_LOWER" else small)
        ends.append(small if auto_pad == "SAME_LOWER" else big)
    return tuple(begins + ends)


def _normalise_window(
    op: str, attrs: dict[str, Any], x: Shape, weights: Sequence[Shape], out: Shape
) -> None:
    if "kernel" not in attrs:
        if op in ("Conv", "ConvTranspose") and weights:
            attrs["kernel"] = tuple(weights[0][2:])
        elif len(x) > 2 and len(out) > 2:
            return  # malformed pool without kernel: leave as read
    if "kernel" not in attrs:
        return
    nd = len(attrs["kernel"])
    attrs["kernel"] = tuple(int(k) for k in attrs["kernel"])
    attrs["stride"] = tuple(attrs.get("stride") or (1,) * nd)
    if op in ("Conv", "ConvTranspose") or "dilation" in attrs:
        attrs["dilation"] = tuple(attrs.get("dilation") or (1,) * nd)
    auto_pad = str(attrs.pop("auto_pad", "NOTSET") or "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID") and op != "ConvTranspose":
        attrs["pads"] = resolve_auto_pad(
            auto_pad, x[2:], attrs["kernel"], attrs["stride"], attrs.get("dilation", (1,) * nd)
        )
    elif auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad  # ConvTranspose SAME_*: the output shape says it all
    attrs["pads"] = tuple(attrs.get("pads") or (0,) * (2 * nd))
    if op in ("Conv", "ConvTranspose"):
        attrs["groups"] = int(attrs.get("groups", 1))


# --------------------------------------------------------------------------- constants


class _Constants:
    """Values of constant tensors, computed on demand (shape arithmetic, config inputs)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        producers: dict[str, onnx.NodeProto],
        const_tensors: set[str],
        shape_of: dict[str, Shape | None],
    ) -> None:
        self.model = model
        self._inits: dict[str, onnx.TensorProto] | None = None
        self.opset_imports = list(model.opset_import)
        self.producers = producers
        self.const_tensors = const_tensors
        self.shape_of = shape_of
        self.dtype_of: dict[str, int] = {}
        self.cache: dict[str, np.ndarray | None] = {}
        self.params_memo: dict[str, int] = {}

    def value(self, name: str) -> np.ndarray | None:
        """The value of constant tensor ``name`` or None when it cannot be computed."""
        if name not in self.cache:
            self.cache[name] = self._compute(name)
        return self.cache[name]

    def stored_params(self, name: str) -> int:
        """Learnable values a constant tensor is computed from (0 for shape arithmetic).

        Stored tensors count when they hold weights (float or 8/4/16-bit integer types; int32,
        int64 and bool hold indices and shapes); scalars are arithmetic constants;
        generated weights (ConstantOfShape, RandomNormal, ... of a float type: files whose
        weights are produced at run time) count their size; a DequantizeLinear counts its
        quantized input only (scales and zero points are not parameters).
        """
        if name in self.params_memo:
            return self.params_memo[name]
        self.params_memo[name] = 0  # guards against malformed cycles
        init = self.initializers().get(name)
        node = self.producers.get(name)
        if init is not None:
            n = math.prod(init.dims)
            total = n if init.data_type in _PARAM_TYPES and n > 1 else 0
        elif node is None or node.op_type in SHAPE_ONLY_OPS:
            total = 0
        elif node.op_type == "Constant":
            shape = self.shape_of.get(name)
            dtype = self.dtype_of.get(name, TensorProto.FLOAT)
            n = math.prod(shape) if shape is not None else 0
            total = n if dtype in _PARAM_TYPES and n > 1 else 0
        elif node.op_type in _GENERATORS:
            shape = self.shape_of.get(name)
            dtype = self.dtype_of.get(name, TensorProto.FLOAT)
            total = math.prod(shape) if shape is not None and dtype in _FLOAT_TYPES else 0
        elif node.op_type == "DequantizeLinear":
            total = self.stored_params(node.input[0])
        else:
            total = sum(self.stored_params(t) for t in node.input if t)
        self.params_memo[name] = total
        return total

    def initializers(self) -> dict[str, onnx.TensorProto]:
        """Initializers by name (built on first use: most graphs never need them)."""
        if self._inits is None:
            self._inits = {t.name: t for t in self.model.graph.initializer}
        return self._inits

    def _compute(self, name: str) -> np.ndarray | None:
        init = self.initializers().get(name)
        if init is not None:
            if init.data_location == TensorProto.EXTERNAL or not _has_data(init):
                return None
            return numpy_helper.to_array(init)
        node = self.producers.get(name)
        if node is None or name not in self.const_tensors:
            return None
        if node.domain not in DEFAULT_DOMAINS:
            return None
        if node.op_type == "Constant":
            return _constant_node_value(node)
        if node.op_type in SHAPE_ONLY_OPS:
            shape = self.shape_of.get(node.input[0])
            if shape is None:
                return None
            if node.op_type == "Size":
                return np.asarray(math.prod(shape), dtype=np.int64)
            a = {attr.name: int(attr.i) for attr in node.attribute}
            return np.asarray(shape[a.get("start", 0) : a.get("end", len(shape))], dtype=np.int64)
        results = self._evaluate(node)
        return None if results is None else results.get(name)

    def _evaluate(self, node: onnx.NodeProto) -> dict[str, np.ndarray] | None:
        """Run one constant node with onnx's reference evaluator on its computed inputs."""
        for o in node.output:
            shape = self.shape_of.get(o)
            if shape is not None and math.prod(shape) > SMALL_TENSOR:
                return None  # a weight-sized constant (ConstantOfShape...): never materialised
        inputs: list[np.ndarray | None] = []
        for t in node.input:
            v = self.value(t) if t else None
            if t and v is None:
                return None
            inputs.append(v)
        if any(v is not None and v.size > SMALL_TENSOR for v in inputs):
            return None  # arithmetic on weights: its values are not needed for the IR
        outs = [o for o in node.output if o]
        results = _shape_arithmetic(node, inputs)
        if results is None:
            results = self._reference(node, inputs, outs)
        if results is None:
            return None
        values = {o: np.asarray(r) for o, r in zip(outs, results, strict=False)}
        self.cache.update(values)
        return values

    def _reference(
        self, node: onnx.NodeProto, inputs: list[np.ndarray | None], outs: list[str]
    ) -> list[Any] | None:
        """Any other op, with onnx's reference evaluator (a few ms per node)."""
        try:
            from onnx.reference import ReferenceEvaluator

            names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
            feeds = {n: v for n, v in zip(names, inputs, strict=True) if n and v is not None}
            call = helper.make_node(node.op_type, names, outs)
            call.attribute.extend(node.attribute)
            g = helper.make_graph(
                [call],
                "constant",
                [
                    helper.make_tensor_value_info(
                        n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)
                    )
                    for n, v in feeds.items()
                ],
                [helper.make_empty_tensor_value_info(o) for o in outs],
            )
            model = helper.make_model(g, opset_imports=self.opset_imports)
            return list(ReferenceEvaluator(model).run(None, feeds))
        except Exception as exc:
            log.debug("cannot evaluate constant node %s (%s): %s", node.name, node.op_type, exc)
            return None


_FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
)
#: Element types of stored parameters (int32/int64/bool tensors hold indices and shapes).
_PARAM_TYPES = _FLOAT_TYPES | {
    TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
    *(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT8E4M3FN", "FLOAT8E5M2")
      if hasattr(TensorProto, n)),
}  # fmt: skip
#: Ops that create a weight-sized tensor from nothing stored.
_GENERATORS = frozenset(
    {"ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
     "EyeLike", "Multinomial", "Bernoulli"}
)  # fmt: skip


def _shape_arithmetic(node: onnx.NodeProto, ins: list[Any]) -> list[Any] | None:
    """Evaluate the ops exporters use for shape arithmetic, with numpy.

    Written out rather than run through ``onnx.reference`` because that evaluator costs
    milliseconds per node to set up, and a transformer export has thousands of these tiny
    nodes (Swin-T: ~5000 values). Any other op (or an unusual form) returns None and goes to
    the reference evaluator. Semantics follow the ONNX operator definitions.
    """
    op = node.op_type
    a: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.INT:
            a[attr.name] = int(attr.i)
        elif attr.type == onnx.AttributeProto.INTS:
            a[attr.name] = [int(v) for v in attr.ints]
    x = ins[0] if ins else None
    try:
        if op == "Identity":
            return [x]
        if op == "Cast" and x is not None:
            return [x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))]
        if op == "Gather" and x is not None and ins[1] is not None:
            return [np.take(x, ins[1], axis=a.get("axis", 0))]
        if op in ("Unsqueeze", "Squeeze") and x is not None:
            axes = a.get("axes") if len(ins) < 2 or ins[1] is None else [int(v) for v in ins[1]]
            if op == "Squeeze":
                return [np.squeeze(x, axis=None if axes is None else tuple(axes))]
            rank = x.ndim + len(axes or [])
            out = x
            for ax in sorted(ax + rank if ax < 0 else ax for ax in axes or []):
                out = np.expand_dims(out, ax)
            return [out]
        if op == "Concat":
            return [np.concatenate([v for v in ins if v is not None], axis=a["axis"])]
        if op in _NP_BINARY and len(ins) == 2 and x is not None and ins[1] is not None:
            y = ins[1]
            if op == "Div" and np.issubdtype(x.dtype, np.integer):
                return [np.trunc(x / y).astype(x.dtype)]  # integer Div truncates toward 0
            if op == "Mod":
                return [np.fmod(x, y) if a.get("fmod", 0) else np.mod(x, y)]
            return [_NP_BINARY[op](x, y)]
        if op in _NP_UNARY and x is not None:
            return [_NP_UNARY[op](x)]
        if op == "Where" and all(v is not None for v in ins):
            return [np.where(*ins)]
        if op in ("Max", "Min") and all(v is not None for v in ins):
            fn = np.maximum if op == "Max" else np.minimum
            out = ins[0]
            for v in ins[1:]:
                out = fn(out, v)
            return [out]
        if op == "Range" and all(v is not None for v in ins):
            start, limit, delta = (v.item() for v in ins)  # type: ignore[union-attr]
            return [np.arange(start, limit, delta, dtype=ins[0].dtype)]  # type: ignore[union-attr]
        if op == "ConstantOfShape" and x is not None:
            fill = next(
                (numpy_helper.to_array(t.t) for t in node.attribute if t.name == "value"), None
            )
            value = np.zeros(1, np.float32) if fill is None else fill.reshape(-1)
            return [np.full(tuple(int(d) for d in x), value[0], dtype=value.dtype)]
        if op == "Reshape" and x is not None and ins[1] is not None:
            target = [int(d) for d in ins[1]]
            if not a.get("allowzero", 0):
                target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
            return [x.reshape(target)]
        if op == "Expand" and x is not None and ins[1] is not None:
            shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in ins[1]))
            return [np.array(np.broadcast_to(x, shape))]
        if op == "Transpose" and x is not None:
            return [np.transpose(x, a.get("perm"))]
        if op == "ScatterND" and all(v is not None for v in ins) and not node.attribute:
            out = np.array(x)
            idx, updates = ins[1], ins[2]
            flat = idx.reshape(-1, idx.shape[-1])
            upd = updates.reshape(flat.shape[0], *updates.shape[idx.ndim - 1 :])
            for i, where in enumerate(flat):
                out[tuple(where)] = upd[i]
            return [out]
        if op == "Slice" and x is not None and len(ins) >= 3:
            starts, ends = ins[1], ins[2]
            axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
            steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
            index: list[slice] = [slice(None)] * x.ndim
            for st, en, ax, sp in zip(starts, ends, axes, steps, strict=True):
                index[int(ax)] = slice(int(st), int(en), int(sp))
            return [x[tuple(index)]]
    except Exception:  # malformed constant: let the reference evaluator report it
        return None
    return None


_NP_BINARY: dict[str, Any] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Mod": np.mod,
    "Pow": np.power,
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "And": np.logical_and,
    "Or": np.logical_or,
}
_NP_UNARY: dict[str, Any] = {
    "Neg": np.negative,
    "Abs": np.abs,
    "Not": np.logical_not,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Sqrt": np.sqrt,
}


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int"):
            return np.asarray(attr.f if attr.name == "value_float" else attr.i)
        if attr.name in ("value_floats", "value_ints"):
            vals = attr.floats if attr.name == "value_floats" else attr.ints
            return np.asarray(list(vals))
    return None


def _config_value(key: str, arr: np.ndarray) -> Any:
    if key in SCALAR_CONFIG:
        if arr.size != 1:
            return _small_array_value(arr)
        v = arr.reshape(-1)[0].item()
        return v
    if arr.size > MAX_ATTR_VALUES:
        return None
    vals = arr.reshape(-1).tolist()
    return tuple(vals)


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
        "opset": _opset(model),
    }
    if model.producer_name:
        info["producer"] = model.producer_name
    dtypes = {
        vi.name: np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
        for vi in activation_inputs(model)
        if vi.name in shapes
        and vi.type.tensor_type.elem_type not in (0, TensorProto.FLOAT)
        and vi.type.tensor_type.elem_type in _BITS
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

    inferred, reasons = _infer(_shape_model(model, nodes, input_shapes), label)
    shape_of, dtype_of = _value_infos(inferred)
    shape_of.update(input_shapes)
    consts = _Constants(model, producers, const_tensors, shape_of)
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
    consts: _Constants,
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
    consts: _Constants,
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
    consts: _Constants,
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

    attrs = _node_attrs(node)
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
                value = _config_value(config[pos], arr)
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
        _normalise_window(node.op_type, attrs, in_shapes[0], w_shapes, out_shapes[0])
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


__all__ = [
    "fix_model_inputs",
    "fixed_input_shapes",
    "from_onnx",
    "load_model",
    "load_runnable",
    "resolve_auto_pad",
]
