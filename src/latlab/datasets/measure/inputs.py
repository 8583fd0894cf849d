"""Fixed, seeded input tensors for an ONNX model (shared by the onnxruntime and torch backends).

Every backend feeds the same inputs for the same seed, so that two backends measure the same
work. Shapes come from the model's declared inputs; a dynamic dimension is taken from the
network's IR (which has concrete shapes after shape inference, or the user's input shape), and
a dynamic leading dimension falls back to the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from latlab.errors import MeasurementError

# ONNX TensorProto element types -> numpy dtypes (the ones models take as inputs).
_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
}


_INT_TYPES = frozenset({2, 3, 5, 6, 7})


def model_inputs(
    model: Any,
    batch: int,
    ir_shapes: dict[str, tuple[int, ...]] | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    reference: str = "network",
) -> dict[str, np.ndarray]:
    """Seeded input arrays for the graph inputs of ``model`` that are not initializers."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    feeds: dict[str, np.ndarray] = {}
    bounds: dict[str, int] | None = None
    if any(i.type.tensor_type.elem_type in _INT_TYPES for i in graph_inputs):
        bounds = index_bounds(model)
    for k, inp in enumerate(graph_inputs):
        ttype = inp.type.tensor_type
        dtype = _DTYPES.get(ttype.elem_type)
        if dtype is None:
            raise MeasurementError(
                f"input {inp.name!r} of {reference!r} has an unsupported element type "
                f"{ttype.elem_type}"
            )
        declared = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        known = (ir_shapes or {}).get(inp.name)
        if known is None and input_shape is not None and k == 0:
            known = tuple(int(d) for d in input_shape)
        shape: list[int] = []
        for axis, dim in enumerate(declared):
            if dim is not None and dim > 0:
                shape.append(dim)
            elif known is not None and axis < len(known):
                shape.append(int(known[axis]))
            elif axis == 0:
                shape.append(batch)
            else:
                raise MeasurementError(
                    f"input {inp.name!r} of {reference!r} has a dynamic dimension {axis}: "
                    "give --input-shape"
                )
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(size=shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:  # token ids: valid rows of every table they index; masks and flags: 0/1
            high = bounds.get(inp.name, 2) if bounds is not None else 2
            feeds[inp.name] = rng.integers(0, max(high, 1), size=shape).astype(dtype)
    return feeds


def index_bounds(model: Any) -> dict[str, int]:
    """For integer graph inputs used as ``Gather`` indices into a stored table (token ids into
    an embedding), the number of rows every such table has (the smallest): ids drawn below it
    are valid, as a tokenizer's would be; inputs that index no table are absent."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in inputs:
            continue
        table = dims.get(node.input[0])
        if not table:
            continue
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
        rows = int(table[axis])
        name = node.input[1]
        bounds[name] = min(bounds.get(name, rows), rows)
    return bounds


def ir_input_shapes(
    network: Any, batch: int, input_shape: Sequence[int] | None
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes from the network's IR (raises as :func:`resolve` does)."""
    from latlab.datasets.references import resolve

    graph = resolve(network, batch=batch, input_shape=input_shape)
    return {name: tuple(shape) for name, shape in graph.inputs.items()}


def has_dynamic_inputs(model: Any) -> bool:
    """Whether any non-initializer graph input has a dimension without a fixed size."""
    initializers = {t.name for t in model.graph.initializer}
    return any(
        not (d.HasField("dim_value") and d.dim_value > 0)
        for i in model.graph.input
        if i.name not in initializers
        for d in i.type.tensor_type.shape.dim
    )


def fixed_inputs(
    network: Any, model: Any, batch: int, input_shape: Sequence[int] | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded inputs for ``model`` (the executable of ``network``), dynamic dims resolved."""
    reference = network if isinstance(network, str) else network.reference
    shapes = ir_input_shapes(network, batch, input_shape) if has_dynamic_inputs(model) else None
    return model_inputs(model, batch, shapes, input_shape, seed, reference)


def graph_inputs(graph: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for the IR's inputs: the same values :func:`model_inputs` gives the
    exported ONNX model (same generator, same order), so both backends run the same data.
    Integer inputs (``graph.input_dtype``) get ids below the vocabulary of the embedding
    (``Gather``) layers that read them."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, shape in graph.inputs.items():
        dtype = np.dtype(graph.input_dtype(name))
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(size=list(shape)).astype(dtype)
            continue
        vocab = [
            int(la.attrs["vocab"])
            for la in graph.layers
            if la.op == "Gather" and name in la.inputs and "vocab" in la.attrs
        ]
        high = min(vocab) if vocab else 2
        feeds[name] = rng.integers(0, high, size=list(shape)).astype(dtype)
    return feeds
