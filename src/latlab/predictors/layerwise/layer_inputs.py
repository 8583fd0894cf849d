"""Per-layer inputs of the layer models: the ANNETTE vector, costs and the model key (the
network-level vector encodings are :mod:`latlab.predictors.vector_features`).

A layer model is fitted per *layer type*. The type of a layer is its :func:`model_key`
(``conv``, ``dwconv``, ``fc``, ``maxpool``, ``avgpool``, ``gpool``, ``add``, ``mul``,
``concat``, ``bn``, ``act:Relu``, ...; transformer layers: ``matmul`` (MatMul by a weight,
``nn.Linear`` on tokens), ``bmm`` (MatMul of two activations), ``layernorm``, ``rmsnorm``
(the primitive chain's ReduceMean, in a group with its Sqrt), ``skiplayernorm`` (a LayerNorm
in a group with its residual Add: onnxruntime's SkipLayerNormalization, a kernel of its own),
``gelu`` (the Erf of the erf
form, or a Gelu op), ``softmax``, ``embed`` (Gather from a weight table), ``gather``,
``transpose``, ``reshape``); when a type has no fitted model, the layer falls back
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


#: Keys of transformer layers that are not their IR kind (see :func:`model_key`).
_OP_KEYS = {
    "LayerNormalization": "layernorm",
    "SimplifiedLayerNormalization": "rmsnorm",
    "Erf": "gelu",
    "Gelu": "gelu",
    "Transpose": "transpose",
    "Reshape": "reshape",
}
#: Layers that name the kernel of a mapped layer without a conv/fc (onnxruntime's fused
#: transformer kernels: SkipLayerNormalization is named by its LayerNorm, Gelu by its Erf),
#: most telling first.
_HEAD_KEYS = ("skiplayernorm", "layernorm", "rmsnorm", "gelu", "softmax", "embed", "transpose")
_COMPUTE_KINDS = ("conv", "dwconv", "fc")


def model_key(layer: Layer) -> str:
    """The layer type a model is fitted for (see the module docstring)."""
    kind = layer.kind
    if kind == "fc" and layer.op == "MatMul":
        # two activations (attention's Q·Kᵀ, P·V): ``bmm``; a weight on a token tensor
        # (nn.Linear of a transformer, run as Gemm over all tokens): ``matmul``. Both differ
        # from a 2-D Gemm (``fc``, a GEMV at batch 1) in what bounds them.
        return "matmul" if layer.weight_shapes else "bmm"
    if layer.op in _OP_KEYS:
        return _OP_KEYS[layer.op]
    if layer.op == "Gather":
        return "embed" if layer.weight_shapes else "gather"
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


def group_head(layers: Sequence[Layer], members: Sequence[int]) -> int:
    """The member of a mapped layer whose model predicts it: the first conv/dwconv/fc, else
    the first layer naming a fused transformer kernel (:data:`_HEAD_KEYS`), else the first.

    Benchmarks and predictions pick heads by this one rule, so a fused kernel (a GELU's
    five primitive ops, a residual Add + LayerNorm) is learnt and predicted as the same type.
    """
    for m in members:
        if layers[m].kind in _COMPUTE_KINDS:
            return m
    keys = {m: _group_layer_key(layers, members, m) for m in members}
    for want in _HEAD_KEYS:
        for m in members:
            if keys[m] == want:
                return m
    return members[0]


def _group_layer_key(layers: Sequence[Layer], members: Sequence[int], m: int) -> str:
    """``model_key`` of member ``m``, with RMSNorm's primitive chain (ReduceMean + Sqrt in one
    group: onnxruntime's SimplifiedLayerNormalization) keyed ``rmsnorm`` on its ReduceMean."""
    layer = layers[m]
    if layer.op == "ReduceMean" and any(layers[o].op == "Sqrt" for o in members):
        return "rmsnorm"
    if layer.op == "LayerNormalization" and any(layers[o].op == "Add" for o in members):
        return "skiplayernorm"  # onnxruntime's SkipLayerNormalization: its own kernel
    return model_key(layer)


def group_record(layers: Sequence[Layer], members: Sequence[int]) -> tuple[int, dict[str, Any]]:
    """(head index, layer record of the head keyed for its group) of a mapped layer."""
    head = group_head(layers, members)
    rec = layer_record(layers[head])
    rec["key"] = _group_layer_key(layers, members, head)
    return head, rec


def key_chain(key: str, kind: str) -> list[str]:
    """Model keys to try for a layer, most specific first, ending with the pooled model."""
    out = [key]
    if kind not in out:
        out.append(kind)
    out.append("*")
    return out


#: Bit widths whose arithmetic packs several operands into one 32-bit SIMD lane (AVX-512
#: VNNI: four int8 MACs per lane; AVX512-BF16: two bf16 MACs per lane).
PACKED_BITS = (8, 16)


def lane_ops(row: dict[str, Any]) -> float:
    """A layer's operations in fp32 SIMD-lane units: ``num_ops * bits / 32`` when both its
    weights and activations are int8 (bf16), else ``num_ops``.

    The roofline's compute term ``f / P_peak`` then follows the precision: a model fitted at
    fp32 predicts an int8 layer's compute four times faster, and one fitted on int8 benchmarks
    reads its peak in the same units. Other widths (binary layers: XNOR-popcount) keep their
    operation count: their cost model is :mod:`latlab.predictors.bnn`'s."""
    bits = max(int(row.get("act_bits", 32)), int(row.get("weight_bits", 32)))
    ops = float(row["num_ops"])
    return ops * bits / 32 if bits in PACKED_BITS else ops


def data_bytes(row: dict[str, Any]) -> float:
    """Bytes a layer moves: activations read and written plus its weights."""
    return float(row["bytes_read"] + row["bytes_written"] + row["weight_bytes"])


def layer_record(layer: Layer) -> dict[str, Any]:
    """ANNETTE features, counts, key and kind of one layer (one row of a layer-model table)."""
    row = layer_row(layer)
    row["op"] = layer.op
    row["kind"] = layer.kind
    row["key"] = model_key(layer)
    if row["key"] == "embed":
        # An embedding reads the rows its ids select (as many values as it writes), not its
        # whole table: a 30522 x 768 vocabulary would otherwise be a 94 MB read per lookup.
        row["bytes"] = float(row["bytes_read"] + 2 * row["bytes_written"])
    else:
        row["bytes"] = data_bytes(row)
    return row


def feature_matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """``(n, 11)`` ANNETTE vectors of layer records, float64."""
    return np.asarray([[r[f] for f in ANNETTE_FEATURES] for r in rows], dtype=float).reshape(
        -1, len(ANNETTE_FEATURES)
    )
