"""The internal representation (IR) of a network: a DAG of layers with shapes and costs.

Every network latlab handles, whatever its source (an ONNX file, a torch module, a search-space
spec, a zoo architecture), becomes one :class:`NetworkGraph`. Encoders turn it into features,
the measurement part exports it to ONNX and runs it, and layer-wise predictors walk its layers.

Op types use ONNX names (``Conv``, ``Gemm``, ``BatchNormalization``, ...) so that importing
ONNX needs no translation table; latlab-only ops (binary layers) use their own names. Shapes
include the batch dimension. Per-layer counts are filled in by the cost rules of
:mod:`latlab.encoders.ops`; an op without a rule is kept with ``known=False`` and listed by
:attr:`NetworkGraph.unknown_ops`, never silently costed as zero.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx

Shape = tuple[int, ...]

#: The numeric counts every layer carries, in the order the summary encoder uses.
COUNT_FIELDS: tuple[str, ...] = (
    "macs",
    "flops",
    "params",
    "bytes_read",
    "bytes_written",
    "weight_bytes",
)


def numel(shape: Shape) -> int:
    """Number of elements of a tensor of ``shape`` (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(slots=True)
class Layer:
    """One operation of a network, with its tensors' shapes and its cost.

    ``inputs``/``outputs`` are activation tensor names (weights are not tensors of the graph:
    only their shapes, ``weight_shapes``, matter). ``attrs`` uses normalised keys: ``kernel``,
    ``stride``, ``pads`` (ONNX order: begins then ends), ``dilation``, ``groups`` and op-specific
    ones (``axis``, ``shape``, ``perm``, ...).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    weight_shapes: tuple[Shape, ...] = ()
    weight_bits: int = 32
    act_bits: int = 32
    kind: str = "other"
    known: bool = True
    macs: int = 0
    flops: int = 0
    params: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    weight_bytes: int = 0

    @property
    def output_shape(self) -> Shape:
        """Shape of the first (usually only) output."""
        return self.output_shapes[0]

    @property
    def input_shape(self) -> Shape:
        """Shape of the first activation input (empty tuple for source layers)."""
        return self.input_shapes[0] if self.input_shapes else ()

    def signature(self) -> tuple[Any, ...]:
        """Structure of the layer without its name: what makes two layers cost the same."""
        return (
            self.op,
            self.input_shapes,
            self.output_shapes,
            tuple(sorted((k, _freeze(v)) for k, v in self.attrs.items())),
            self.weight_shapes,
            self.weight_bits,
            self.act_bits,
        )


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True, slots=True)
class NetworkTotals:
    """Whole-network counts (sums over layers plus structure figures)."""

    macs: int
    flops: int
    params: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    n_layers: int
    depth: int
    op_counts: dict[str, int]
    op_macs: dict[str, int]
    unknown_ops: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "weight_bytes": self.weight_bytes,
            "layers": self.n_layers,
            "depth": self.depth,
            "op_counts": dict(self.op_counts),
            "unknown_ops": list(self.unknown_ops),
        }


#: Layer kinds that count towards depth (compute layers, as "depth" is usually meant).
DEPTH_KINDS = frozenset({"conv", "dwconv", "fc", "binconv", "binfc"})


class NetworkGraph:
    """A network as a DAG of :class:`Layer` objects in topological order.

    ``inputs`` maps graph input tensor names to shapes; ``outputs`` lists the output tensor
    names; ``meta`` carries provenance (``reference``, ``family``, ``space``, ...).
    """

    def __init__(
        self,
        name: str,
        inputs: dict[str, Shape],
        outputs: list[str],
        layers: list[Layer],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.inputs = dict(inputs)
        self.outputs = list(outputs)
        self.layers = layers
        self.meta = dict(meta or {})

    def __repr__(self) -> str:
        return f"NetworkGraph({self.name!r}, layers={len(self.layers)})"

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def reference(self) -> str:
        """The network reference this graph was built from (its name when it has none)."""
        return str(self.meta.get("reference", self.name))

    def input_dtype(self, name: str) -> str:
        """Element type of input ``name`` as a numpy name: ``float32`` unless
        ``meta["input_dtypes"]`` says otherwise (``int64`` token ids of text models)."""
        return str(self.meta.get("input_dtypes", {}).get(name, "float32"))

    @property
    def family(self) -> str:
        """Network family (search space or zoo family), used for family splits and reports."""
        return str(self.meta.get("family", self.reference.split(":", 1)[0]))

    @cached_property
    def producer(self) -> dict[str, int]:
        """Tensor name -> index of the layer producing it."""
        return {t: i for i, layer in enumerate(self.layers) for t in layer.outputs}

    def predecessors(self, index: int) -> list[int]:
        """Indices of the layers whose outputs layer ``index`` consumes."""
        prod = self.producer
        return [prod[t] for t in self.layers[index].inputs if t in prod]

    @cached_property
    def successors(self) -> list[list[int]]:
        """For each layer index, the indices of the layers consuming its outputs."""
        succ: list[list[int]] = [[] for _ in self.layers]
        for i in range(len(self.layers)):
            for p in self.predecessors(i):
                succ[p].append(i)
        return succ

    def edges(self) -> list[tuple[int, int]]:
        """Data-flow edges between layer indices (producer, consumer)."""
        return [(p, i) for i in range(len(self.layers)) for p in self.predecessors(i)]

    def to_networkx(self) -> nx.DiGraph:
        """A networkx view: nodes are layer indices with the :class:`Layer` as ``layer``."""
        g = nx.DiGraph()
        for i, layer in enumerate(self.layers):
            g.add_node(i, layer=layer, op=layer.op, kind=layer.kind)
        g.add_edges_from(self.edges())
        return g

    @cached_property
    def totals(self) -> NetworkTotals:
        """Sums of the per-layer counts, depth, per-op counts and the unknown ops."""
        return self._sum_layers()

    def _sum_layers(self) -> NetworkTotals:
        sums = dict.fromkeys(COUNT_FIELDS, 0)
        op_counts: Counter[str] = Counter()
        op_macs: Counter[str] = Counter()
        unknown: set[str] = set()
        depth_at = [0] * len(self.layers)
        prod = self.producer
        for i, layer in enumerate(self.layers):
            sums["macs"] += layer.macs
            sums["flops"] += layer.flops
            sums["params"] += layer.params
            sums["bytes_read"] += layer.bytes_read
            sums["bytes_written"] += layer.bytes_written
            sums["weight_bytes"] += layer.weight_bytes
            op_counts[layer.kind] += 1
            op_macs[layer.kind] += layer.macs
            if not layer.known:
                unknown.add(layer.op)
            before = max((depth_at[prod[t]] for t in layer.inputs if t in prod), default=0)
            depth_at[i] = before + (1 if layer.kind in DEPTH_KINDS else 0)
        return NetworkTotals(
            n_layers=len(self.layers),
            depth=max(depth_at, default=0),
            op_counts=dict(op_counts),
            op_macs=dict(op_macs),
            unknown_ops=tuple(sorted(unknown)),
            **sums,
        )

    @property
    def unknown_ops(self) -> tuple[str, ...]:
        """Op types present in the graph that have no cost rule (sorted, unique)."""
        return self.totals.unknown_ops

    @cached_property
    def digest(self) -> str:
        """Content hash of the structure (ops, shapes, attributes, edges), independent of names.

        Two graphs with the same digest cost the same on any device, so the digest keys feature
        caches and identifies networks in the store.
        """
        h = hashlib.sha1()
        h.update(json.dumps(sorted(self.inputs.values())).encode())
        for i, layer in enumerate(self.layers):
            h.update(repr((layer.signature(), tuple(self.predecessors(i)))).encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Readable summary for CLIs and the store."""
        out = {
            "network": self.reference,
            "input_shapes": {k: list(v) for k, v in self.inputs.items()},
        }
        out.update(self.totals.as_dict())
        return out


class LazyNetworkGraph(NetworkGraph):
    """A graph whose layers are built only when something asks for them.

    Search spaces with thousands of members (nb201) resolve references to lazy graphs: their
    totals and digest come from fast formulas (``totals_fn``, ``digest_value``) so that encoding
    the whole space does not build thousands of layer lists; walking ``layers`` builds the full
    graph with ``build`` once. The fast totals must equal the built graph's (tested).
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], NetworkGraph],
        meta: dict[str, Any] | None = None,
        totals_fn: Callable[[], NetworkTotals] | None = None,
        digest_value: str | None = None,
    ) -> None:
        self.name = name
        self.meta = dict(meta or {})
        self._build = build
        self._totals_fn = totals_fn
        self._digest_value = digest_value

    @cached_property
    def built(self) -> NetworkGraph:
        """The full graph (built on first access)."""
        return self._build()

    @property
    def layers(self) -> list[Layer]:  # type: ignore[override]
        return self.built.layers

    @property
    def inputs(self) -> dict[str, Shape]:  # type: ignore[override]
        return self.built.inputs

    @property
    def outputs(self) -> list[str]:  # type: ignore[override]
        return self.built.outputs

    @cached_property
    def totals(self) -> NetworkTotals:
        return self._totals_fn() if self._totals_fn is not None else self.built.totals

    @cached_property
    def digest(self) -> str:
        return self._digest_value if self._digest_value is not None else self.built.digest
