"""Per-layer inputs of the layer models: the ANNETTE vector, costs and the model key.

A layer model is fitted per *layer type*. The type of a layer is its :func:`model_key`
(``conv``, ``dwconv``, ``fc``, ``maxpool``, ``avgpool``, ``gpool``, ``add``, ``mul``,
``concat``, ``bn``, ``act:Relu``, ...); when a type has no fitted model, the layer falls back
along :func:`key_chain` to its IR kind (``act``, ``eltwise``, ``pool``, ...) and finally to
``*`` (every benchmark pooled), so every layer gets an estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from latlab.encoders.ir import Layer
from latlab.encoders.layer_features import ANNETTE_FEATURES, layer_row

#: Bytes per fp32 element (the roofline's data volume counts activations and weights).
_ELTWISE_KEYS = {"Add": "add", "Sum": "add", "Sub": "add", "Mul": "mul", "Div": "mul"}
_POOL_KEYS = {"MaxPool": "maxpool", "AveragePool": "avgpool", "LpPool": "avgpool"}


def model_key(layer: Layer) -> str:
    """The layer type a model is fitted for (see the module docstring)."""
    kind = layer.kind
    if kind in ("conv", "dwconv", "fc", "gpool", "concat"):
        return kind
    if kind == "pool":
        return _POOL_KEYS.get(layer.op, "pool")
    if kind == "eltwise":
        return _ELTWISE_KEYS.get(layer.op, "eltwise")
    if kind == "norm":
        return "bn" if layer.op == "BatchNormalization" else "norm"
    if kind == "act":
        return f"act:{layer.op}"
    return kind


def key_chain(key: str, kind: str) -> list[str]:
    """Model keys to try for a layer, most specific first, ending with the pooled model."""
    out = [key]
    if kind not in out:
        out.append(kind)
    out.append("*")
    return out


def data_bytes(row: dict[str, Any]) -> float:
    """Bytes a layer moves: activations read and written plus its weights."""
    return float(row["bytes_read"] + row["bytes_written"] + row["weight_bytes"])


def layer_record(layer: Layer) -> dict[str, Any]:
    """ANNETTE features, counts, key and kind of one layer (one row of a layer-model table)."""
    row = layer_row(layer)
    row["op"] = layer.op
    row["kind"] = layer.kind
    row["key"] = model_key(layer)
    row["bytes"] = data_bytes(row)
    return row


def feature_matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """``(n, 11)`` ANNETTE vectors of layer records, float64."""
    return np.asarray([[r[f] for f in ANNETTE_FEATURES] for r in rows], dtype=float).reshape(
        -1, len(ANNETTE_FEATURES)
    )
