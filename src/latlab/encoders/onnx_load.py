"""Loading ONNX files for the import and for running them, and fixing their input shapes
(:mod:`latlab.encoders.onnx_import` describes why: only shapes matter, weights are never
copied, a dynamic dimension nobody gave is one error naming the input)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latlab.encoders.ir import Shape
from latlab.encoders.onnx_common import InputShape, ModelSource, has_data
from latlab.errors import OnnxImportError, first_line

#: The import's logger (one name for every part of it).
log = logging.getLogger("latlab.encoders.onnx_import")


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
            raise OnnxImportError(f"corrupt ONNX model bytes: {first_line(exc)}") from None
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
        raise OnnxImportError(f"corrupt ONNX file {path}: {first_line(exc)}") from None
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
        elif has_data(t):
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
            set_shape(vi, shapes[vi.name])
    return shapes


def set_shape(vi: onnx.ValueInfoProto, shape: Shape) -> None:
    tt = vi.type.tensor_type
    tt.shape.ClearField("dim")
    for d in shape:
        tt.shape.dim.add().dim_value = int(d)
