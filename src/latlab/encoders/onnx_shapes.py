"""ONNX shape inference for the import (:mod:`latlab.encoders.onnx_import`): whole-graph
inference on a weight-free copy, with the reasons strict inference gives for what it leaves
open."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Shape
from latlab.encoders.onnx_common import DEFAULT_DOMAINS, SMALL_TENSOR, has_data
from latlab.encoders.onnx_load import set_shape
from latlab.errors import OnnxImportError, first_line

#: The import's logger (one name for every part of it).
log = logging.getLogger("latlab.encoders.onnx_import")


# --------------------------------------------------------------------------- shape inference


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return 1


def _has_schema(node: onnx.NodeProto) -> bool:
    try:
        return bool(onnx.defs.has(node.op_type, node.domain))
    except Exception:  # pragma: no cover - defensive: onnx raises for odd domains
        return False


def shape_model(
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
        inline = t.data_location != TensorProto.EXTERNAL and has_data(t)
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
            set_shape(copy, shapes[vi.name])
    custom_outputs = {o for node in src.node if not _has_schema(node) for o in node.output}
    for vi in src.output:
        copy = g.output.add()
        copy.CopyFrom(vi)
        if vi.name not in custom_outputs:
            copy.type.tensor_type.ClearField("shape")
    g.value_info.extend(vi for vi in src.value_info if vi.name in custom_outputs)
    return m


def infer_model(model: onnx.ModelProto, label: str) -> tuple[onnx.ModelProto, dict[str, str]]:
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
                f"shape inference failed for {label}: {first_line(exc)}"
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
