"""Per-layer feature vectors (ANNETTE) and a table of them: the input of layer-wise models.

ANNETTE's statistical layer model predicts a layer's efficiency from
``x = (h, w, c, f, k_h, k_w, stride, #ops, #in, #out, #weights)``. ANNETTE computes these per
layer type in NHWC with batch 1; latlab's IR is NCHW with a batch dimension and has many more
op types, so the features are defined once here for *every* layer:

Geometry (per sample, from the first activation input and the first output):

* ``h``, ``w`` -- the output's spatial size, i.e. the loop ANNETTE unrolls. Rank-4 tensors
  ``(N, C, H, W)``: ``H`` and ``W``; rank 3 ``(N, C, L)``: ``h = L``, ``w = 1``; rank 5
  ``(N, C, D, H, W)``: ``h = D·H``, ``w = W``; rank <= 2 (fully connected activations
  ``(N, F)``): ``h = w = 1``.
* ``c`` -- input channels: ``shape[1]`` of the first activation input (``F`` for ``(N, F)``).
  Concat and other multi-input layers use their first input; ``num_inputs`` counts all of them.
* ``f`` -- output channels (filters): ``shape[1]`` of the first output.
* fully connected kinds (``fc``, ``binfc``: Gemm, MatMul) override the above: ``c`` is the
  reduction length ``K`` (last input dim, first with ``transA``), ``f`` the output features
  (last output dim), ``h`` the product of the output dims between batch and features (tokens of
  a ``(N, T, K) x (K, M)`` MatMul), ``w = 1``.
* ``k_h``, ``k_w`` -- the window of convolutions and pooling (``attrs["kernel"]``; for 3-D
  kernels ``k_w`` is the product of the trailing dims). Global pooling's window is its whole
  input map: ``k_h, k_w`` = input ``h, w``. Every other layer: ``1, 1``.
* ``stride`` -- stride along the first spatial axis (``attrs["stride"][0]``), 1 without one.

Counts (the whole layer invocation, batch included, as the roofline needs them):

* ``num_ops`` -- FLOPs of the layer by the IR's counting rules (2·MACs for conv/fc, plus
  bias; element-wise ops per output element; see :mod:`latlab.encoders.ops`). ANNETTE's
  ``num_ops`` is the same 2·MACs for conv/fc.
* ``num_inputs`` / ``num_outputs`` -- elements of all activation inputs / outputs. (ANNETTE
  approximates inputs of a conv by ``h·w·c·stride²``; the IR knows the real input.)
* ``num_weights`` -- stored weight elements: kernels, biases, BatchNorm's four vectors.

Extra columns of the table: ``n`` (batch), ``groups``, ``dilation`` (first axis), bit widths,
and the IR counts ``macs``, ``flops``, ``params``, ``bytes_read``, ``bytes_written``,
``weight_bytes``, plus ``predecessors`` (layer indices feeding the layer) for mapping/fusion
models that look at successive layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latlab.encoders.base import EncoderStateMixin, check_graphs, feature_names
from latlab.encoders.ir import Layer, NetworkGraph, Shape, numel
from latlab.errors import FeatureError

if TYPE_CHECKING:
    import pandas as pd

#: ANNETTE's feature vector, in its order (column names of the table).
ANNETTE_FEATURES: tuple[str, ...] = (
    "h",
    "w",
    "c",
    "f",
    "k_h",
    "k_w",
    "stride",
    "num_ops",
    "num_inputs",
    "num_outputs",
    "num_weights",
)

#: Identification columns of :class:`LayerFeatureEncoder`'s table, before the features.
ID_COLUMNS: tuple[str, ...] = (
    "network",
    "network_index",
    "layer_index",
    "name",
    "op",
    "kind",
    "known",
)

#: Columns after the ANNETTE features.
EXTRA_COLUMNS: tuple[str, ...] = (
    "n",
    "groups",
    "dilation",
    "weight_bits",
    "act_bits",
    "macs",
    "flops",
    "params",
    "bytes_read",
    "bytes_written",
    "weight_bytes",
)

_FC_KINDS = frozenset({"fc", "binfc"})
_GLOBAL_POOL_KINDS = frozenset({"gpool"})


def _channels(shape: Shape) -> int:
    if len(shape) >= 2:
        return int(shape[1])
    if len(shape) == 1:
        return int(shape[0])
    return 1


def _spatial(shape: Shape) -> tuple[int, int]:
    """(h, w) of a tensor by the rank rule of the module docstring."""
    r = len(shape)
    if r <= 2:
        return 1, 1
    if r == 3:
        return int(shape[2]), 1
    return numel(shape[2:-1]), int(shape[-1])


def _first(value: Any, default: int = 1) -> int:
    if value is None:
        return default
    if isinstance(value, int):
        return value
    seq = list(value)
    return int(seq[0]) if seq else default


def layer_geometry(layer: Layer) -> tuple[int, int, int, int, int, int, int]:
    """``(h, w, c, f, k_h, k_w, stride)`` of a layer (definitions in the module docstring)."""
    x = layer.input_shape
    y = layer.output_shapes[0] if layer.output_shapes else ()
    attrs = layer.attrs
    if layer.kind in _FC_KINDS:
        c = int(x[0] if attrs.get("transA") and len(x) == 2 else x[-1]) if x else 1
        f = int(y[-1]) if y else 1
        h = numel(y[1:-1]) if len(y) > 2 else 1
        w = 1
    else:
        h, w = _spatial(y)
        c = _channels(x) if x else _channels(y)
        f = _channels(y)
    kernel = attrs.get("kernel")
    if kernel is not None:
        k = [int(v) for v in kernel] if not isinstance(kernel, int) else [int(kernel)]
        k_h, k_w = k[0], numel(tuple(k[1:]))
    elif layer.kind in _GLOBAL_POOL_KINDS and len(x) > 2:
        k_h, k_w = _spatial(x)
    else:
        k_h = k_w = 1
    stride = _first(attrs.get("stride"))
    return h, w, c, f, k_h, k_w, stride


def annette_vector(layer: Layer) -> tuple[int, ...]:
    """ANNETTE's ``(h, w, c, f, k_h, k_w, stride, #ops, #in, #out, #weights)`` of a layer."""
    return (
        *layer_geometry(layer),
        int(layer.flops),
        sum(numel(s) for s in layer.input_shapes),
        sum(numel(s) for s in layer.output_shapes),
        sum(numel(s) for s in layer.weight_shapes),
    )


def layer_row(layer: Layer) -> dict[str, Any]:
    """Features and counts of one layer as a dict (ANNETTE columns then the extra columns)."""
    row: dict[str, Any] = dict(zip(ANNETTE_FEATURES, annette_vector(layer), strict=True))
    y = layer.output_shapes[0] if layer.output_shapes else ()
    row["n"] = int(y[0]) if y else 1
    row["groups"] = int(layer.attrs.get("groups", 1))
    row["dilation"] = _first(layer.attrs.get("dilation"))
    row["weight_bits"] = int(layer.weight_bits)
    row["act_bits"] = int(layer.act_bits)
    row["macs"] = int(layer.macs)
    row["flops"] = int(layer.flops)
    row["params"] = int(layer.params)
    row["bytes_read"] = int(layer.bytes_read)
    row["bytes_written"] = int(layer.bytes_written)
    row["weight_bytes"] = int(layer.weight_bytes)
    return row


def _check_unknown(graph: NetworkGraph, allow_unknown: bool, encoder: str) -> None:
    if not allow_unknown and graph.unknown_ops:
        raise FeatureError(
            f"{encoder}: network {graph.reference!r} has ops without cost rules "
            f"({', '.join(graph.unknown_ops)}); their counts are unknown "
            "(pass allow_unknown=True to keep them as zero-cost rows)"
        )


# auto_wrap_output_keys=None: the table is not a feature matrix (rows are layers, not
# networks), so scikit-learn's set_output must not try to wrap it.
class LayerFeatureEncoder(  # type: ignore[call-arg]  # TransformerMixin takes it
    EncoderStateMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """One table row per layer of every network: the input of layer-wise models.

    ``transform(graphs)`` returns a :class:`pandas.DataFrame` with columns
    :data:`ID_COLUMNS` (``network`` = reference, ``network_index`` = position in the input,
    ``layer_index`` = position in the graph's topological order, ``name``, ``op``, ``kind``,
    ``known``), then :data:`ANNETTE_FEATURES`, :data:`EXTRA_COLUMNS` and ``predecessors``
    (tuple of layer indices). Numeric columns are ``int64``.

    Parameters
    ----------
    kinds:
        Keep only layers of these kinds (e.g. ``("conv", "dwconv")`` for a conv model);
        ``None`` keeps all.
    allow_unknown:
        Networks with ops that have no cost rule raise :class:`FeatureError` unless True (their
        rows then have ``known=False`` and zero compute counts).

    Stateless: ``fit`` only validates; usable without it.
    """

    def __init__(self, kinds: Sequence[str] | None = None, allow_unknown: bool = False) -> None:
        self.kinds = kinds
        self.allow_unknown = allow_unknown

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> LayerFeatureEncoder:
        check_graphs(graphs, type(self).__name__)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the table's columns."""
        return feature_names(self.columns())

    @staticmethod
    def columns() -> list[str]:
        return [*ID_COLUMNS, *ANNETTE_FEATURES, *EXTRA_COLUMNS, "predecessors"]

    def transform(self, graphs: Sequence[NetworkGraph]) -> pd.DataFrame:
        import pandas as pd

        name = type(self).__name__
        gs = check_graphs(graphs, name)
        keep = None if self.kinds is None else frozenset(self.kinds)
        rows: list[dict[str, Any]] = []
        for gi, g in enumerate(gs):
            _check_unknown(g, self.allow_unknown, name)
            for li, layer in enumerate(g.layers):
                if keep is not None and layer.kind not in keep:
                    continue
                row: dict[str, Any] = {
                    "network": g.reference,
                    "network_index": gi,
                    "layer_index": li,
                    "name": layer.name,
                    "op": layer.op,
                    "kind": layer.kind,
                    "known": bool(layer.known),
                }
                row.update(layer_row(layer))
                row["predecessors"] = tuple(g.predecessors(li))
                rows.append(row)
        df = pd.DataFrame(rows, columns=self.columns())
        numeric = [*ANNETTE_FEATURES, *EXTRA_COLUMNS, "network_index", "layer_index"]
        df[numeric] = df[numeric].astype("int64")
        df["known"] = df["known"].astype(bool)
        return df
