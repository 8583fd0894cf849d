"""Node attributes and the constant interpreter of the ONNX import
(:mod:`latlab.encoders.onnx_import`): constant subgraphs (shape arithmetic, weight-producing
nodes) are evaluated, not made layers; their values configure the layers that read them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Shape
from latlab.encoders.onnx_common import (
    ATTR_KEYS,
    DEFAULT_DOMAINS,
    MAX_ATTR_VALUES,
    SCALAR_CONFIG,
    SHAPE_ONLY_OPS,
    SMALL_TENSOR,
    has_data,
)

#: The import's logger (one name for every part of it).
log = logging.getLogger("latlab.encoders.onnx_import")


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


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
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


def normalise_window(
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


class Constants:
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
            if init.data_location == TensorProto.EXTERNAL or not has_data(init):
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


def config_value(key: str, arr: np.ndarray) -> Any:
    if key in SCALAR_CONFIG:
        if arr.size != 1:
            return _small_array_value(arr)
        v = arr.reshape(-1)[0].item()
        return v
    if arr.size > MAX_ATTR_VALUES:
        return None
    vals = arr.reshape(-1).tolist()
    return tuple(vals)
