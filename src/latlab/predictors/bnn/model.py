"""The XNOROP / LXNOROP cost model of a binary network on a target.

Derivation (Shakkouf & Gromov give the structure; the constants below are ours, justified here).

**Operations.** A binary layer with fan-in ``K`` and ``O`` output elements (``O = C_out`` for a
fully connected layer, ``C_out·H_out·W_out`` for a convolution) computes each output as
``K − 2·popcount(x XOR w)`` over the packed operands: ``⌈K/Bus_T⌉`` words, each one XNOR (an
XOR: the complement folds into the formula), one popcount and one accumulation. Hence

    N_XNOROPs = Σ_binary layers O·⌈K/Bus_T⌉,        Clocks_XNOROP = c_xnor + c_popcount + c_acc.

**Memory access (LXNOROP).** Each XNOROP needs two operand words, one of weights and one of
activations, fetched from the memory that holds them at ``Speed_T`` clocks per word:

    Clocks_LXNOROP = Clocks_XNOROP + 2·Speed_T.

"The memory that holds them": on a CPU with a cache level (``memory.cache_bytes``), the
weights stay in cache from one inference to the next when the model's weights all fit there
(fetch at ``cache_speed_clocks``) and stream from main memory otherwise (an LRU cache cycled
through a larger working set hits nothing): ``Speed_T`` is chosen per model, not per layer.
(A register-blocked kernel reuses words and fetches fewer; that reuse is what a calibrated
``Clocks_LXNOROP`` absorbs.)

**Rate.** With computation power ``CP = Σ_cores f_i`` (clocks per second, all cores busy),

    R_fps = CP / (N_LXNOROPs · Clocks_LXNOROP).

The paper's formula covers the XNOR/popcount work. The rest of an inference costs clocks
too: every binary output is compared with its threshold (the BN+Sign that follows a binary
layer) and stored as a bit (``c_threshold``, ~3 clocks on any ISA: compare, shift/or); the
full-precision first and last layers, un-fused BN, pooling cost ``c_mac`` per MAC,
``c_wbyte`` per byte of their weights (a batch-1 fully connected layer streams every weight
once: it is memory-bound wherever the weights leave the cache) and ``c_flop`` per other
FLOP; a runtime may also pay for gathering operands (im2col elements,
``c_pack``), per executed layer (``c_layer``) and per call (``c_inference``). We count all of
them and express them in LXNOROP units, so that the formula holds for the whole network with

    N_LXNOROPs = N_XNOROPs + (outputs_bin·c_threshold + MACs_fp·c_mac + bytes_fp·c_wbyte
                              + FLOPs_other·c_flop + im2col·c_pack + layers·c_layer
                              + c_inference) / Clocks_LXNOROP.

For a bare-metal target (``c_pack = c_wbyte = c_layer = c_inference = 0``: the catalog's
``c_mac`` includes the weight load) and a network whose work is
in its binary layers, ``N_LXNOROPs → N_XNOROPs``: the paper's model.

**Memory of the model.** ``Memory_M = weights + peak activations + other``: 1 bit per binary
weight (packed per layer), full size (their ``weight_bits``) for other weights and biases;
the peak over the execution of the bytes of live activation tensors (binarised tensors 1 bit
per element, others 4 bytes; reshapes alias their input; no in-place reuse; a compute layer
fused with the BN and Sign after it, as BNN engines run it, never materialises its
pre-activation); other = one 32-bit threshold per channel of each fused BN+Sign, two float32
per channel (folded scale and shift) for any other BatchNormalization.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from latlab.datasets.references import resolve
from latlab.encoders.binary import BINARY_OPS, fan_in, fused_tail, operand_bits, words
from latlab.encoders.ir import Layer, NetworkGraph, numel
from latlab.predictors.bnn.targets import Target, check_bus

#: Ops that only relabel a tensor (no new buffer).
_ALIAS_OPS = frozenset({"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze"})
_FP_COMPUTE_KINDS = frozenset({"conv", "dwconv", "fc"})


@dataclass(frozen=True)
class Step:
    """One executed step: a layer, or a binary layer fused with the BN and Sign after it."""

    layers: tuple[str, ...]
    op: str
    binary: bool
    fused: bool
    inputs: tuple[str, ...]
    output: str
    xnorops: int
    im2col: int
    outputs: int
    macs: int
    flops: int
    weight_bytes: int = 0


@dataclass(frozen=True)
class BnnCounts:
    """Operation counts of a network per inference of one frame, at one bus width."""

    network: str
    bus_width: int
    binary_layers: int
    xnorops: int
    binary_macs: int
    binary_outputs: int
    im2col: int
    fp_macs: int
    fp_weight_bytes: int
    weights_bytes: int
    other_flops: int
    layers: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryBreakdown:
    """``Memory_M`` in bytes: weights + peak activations + other (thresholds, BN)."""

    weights_bytes: int
    activations_bytes: int
    other_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.activations_bytes + self.other_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "activations_bytes": self.activations_bytes,
            "other_bytes": self.other_bytes,
            "total_bytes": self.total_bytes,
        }


@dataclass(frozen=True)
class CostBreakdown:
    """Clocks of one inference on a target, by term (see the module docstring)."""

    binary: float
    pack: float
    threshold: float
    fp: float
    overhead: float

    @property
    def total(self) -> float:
        return self.binary + self.pack + self.threshold + self.fp + self.overhead

    def as_dict(self) -> dict[str, float]:
        return {
            "binary": self.binary,
            "pack": self.pack,
            "threshold": self.threshold,
            "fp": self.fp,
            "overhead": self.overhead,
            "total": self.total,
        }


# --------------------------------------------------------------------------- steps


def steps_of(graph: NetworkGraph, bus_width: int) -> list[Step]:
    """The executed steps of ``graph``, in order: compute layers fused with the BN and Sign
    after them (:func:`~latlab.encoders.binary.fused_tail`), other layers alone."""
    skip: set[int] = set()
    steps: list[Step] = []
    for i, layer in enumerate(graph.layers):
        if i in skip:
            continue
        tail = fused_tail(graph, i)
        skip.update(tail)
        last = graph.layers[tail[-1]] if tail else layer
        names = (layer.name, *(graph.layers[j].name for j in tail))
        if layer.op in BINARY_OPS:
            steps.append(
                Step(
                    layers=names,
                    op=layer.op,
                    binary=True,
                    fused=bool(tail),
                    inputs=layer.inputs,
                    output=last.outputs[0],
                    xnorops=numel(layer.output_shape) * words(fan_in(layer), bus_width),
                    im2col=operand_bits(layer),
                    outputs=numel(layer.output_shape),
                    macs=layer.macs,
                    weight_bytes=layer.weight_bytes,
                    flops=0,  # a fused BN+Sign is the threshold of each output
                )
            )
        else:
            steps.append(
                Step(
                    layers=names,
                    op=layer.op,
                    binary=False,
                    fused=bool(tail),
                    inputs=layer.inputs,
                    output=last.outputs[0],
                    xnorops=0,
                    im2col=_fp_im2col(layer),
                    outputs=0,
                    macs=layer.macs,
                    weight_bytes=layer.weight_bytes if layer.kind in _FP_COMPUTE_KINDS else 0,
                    # a float pre-activation is normalised and compared element by element
                    flops=sum(graph.layers[j].flops for j in (i, *tail)),
                )
            )
    return steps


def _fp_im2col(layer: Layer) -> int:
    """Elements a full-precision convolution gathers by im2col: ``P·K`` (0 for other layers)."""
    if layer.op != "Conv" or not layer.weight_shapes:
        return 0
    w = layer.weight_shapes[0]
    return numel(layer.output_shape) // w[0] * numel(w[1:])


def _batch(graph: NetworkGraph) -> int:
    shapes = list(graph.inputs.values())
    return int(shapes[0][0]) if shapes and shapes[0] else 1


def count_network(network: str | NetworkGraph, bus_width: int = 64) -> BnnCounts:
    """Per-frame operation counts of a network at ``bus_width`` (validated)."""
    bus = check_bus(bus_width, "bus width")
    graph = resolve(network)
    batch = _batch(graph)
    steps = steps_of(graph, bus)
    binary = [s for s in steps if s.binary]
    fp_macs = sum(s.macs for s in steps if not s.binary)
    other = sum(s.flops for s in steps) - 2 * fp_macs
    return BnnCounts(
        network=graph.reference,
        bus_width=bus,
        binary_layers=len(binary),
        xnorops=sum(s.xnorops for s in binary) // batch,
        binary_macs=sum(s.macs for s in binary) // batch,
        binary_outputs=sum(s.outputs for s in binary) // batch,
        im2col=sum(s.im2col for s in steps) // batch,
        fp_macs=fp_macs // batch,
        fp_weight_bytes=sum(
            lay.weight_bytes
            for lay in graph.layers
            if lay.op not in BINARY_OPS and lay.kind in _FP_COMPUTE_KINDS
        ),
        weights_bytes=sum(
            lay.weight_bytes
            for lay in graph.layers
            if lay.op in BINARY_OPS or lay.kind in _FP_COMPUTE_KINDS
        ),
        other_flops=max(other, 0) // batch,
        layers=sum(len(s.layers) for s in steps),
    )


# --------------------------------------------------------------------------- memory


def _layer_by_name(graph: NetworkGraph) -> dict[str, Layer]:
    return {layer.name: layer for layer in graph.layers}


def model_memory(network: str | NetworkGraph) -> MemoryBreakdown:
    """``Memory_M`` of a network (weights + peak activations + other), in bytes."""
    graph = resolve(network)
    layers = _layer_by_name(graph)
    steps = steps_of(graph, 64)
    weights = other = 0
    for s in steps:
        first = layers[s.layers[0]]
        if first.op == "BatchNormalization":
            other += 2 * first.weight_shapes[0][0] * 4
        elif first.kind in _FP_COMPUTE_KINDS or s.binary or first.weight_shapes:
            weights += first.weight_bytes
        if s.fused:  # BN+Sign as one 32-bit threshold per output channel
            other += 4 * first.weight_shapes[0][0]
    return MemoryBreakdown(weights, _peak_activations(graph, steps, layers), other)


def _peak_activations(graph: NetworkGraph, steps: list[Step], layers: dict[str, Layer]) -> int:
    shapes: dict[str, tuple[int, ...]] = dict(graph.inputs)
    for layer in graph.layers:
        shapes.update(zip(layer.outputs, layer.output_shapes, strict=True))
    alias: dict[str, str] = {}
    is_bits: dict[str, bool] = dict.fromkeys(graph.inputs, False)

    def root(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    produced: dict[str, int] = dict.fromkeys(graph.inputs, -1)
    last_use: dict[str, int] = {}
    for k, s in enumerate(steps):
        first = layers[s.layers[0]]
        ins = [root(t) for t in s.inputs]
        for t in ins:
            last_use[t] = k
        if first.op in _ALIAS_OPS and ins:
            alias[s.output] = ins[0]
            continue
        produced[s.output] = k
        in_bits = bool(ins) and all(is_bits.get(t, False) for t in ins)
        is_bits[s.output] = s.fused or first.op == "Sign" or (first.kind == "pool" and in_bits)
    end = len(steps)
    for t in graph.outputs:
        last_use[root(t)] = end

    def nbytes(t: str) -> int:
        n = numel(shapes[t])
        return -(-n // 8) if is_bits.get(t, False) else 4 * n

    peak = 0
    for k in range(len(steps)):
        live = sum(nbytes(t) for t, p in produced.items() if p <= k and last_use.get(t, p) >= k)
        peak = max(peak, live)
    return peak


# --------------------------------------------------------------------------- cost


def cost_of(counts: BnnCounts, target: Target) -> CostBreakdown:
    """Clocks of one inference of ``counts`` on ``target`` (bus widths must agree)."""
    if counts.bus_width != target.bus_width:
        raise ValueError(
            f"counts at bus width {counts.bus_width} used with target {target.name!r} "
            f"of bus width {target.bus_width}"
        )
    w = counts.weights_bytes
    return CostBreakdown(
        binary=counts.xnorops * target.lxnorop_for(w),
        pack=counts.im2col * target.clocks_pack,
        threshold=counts.binary_outputs * target.clocks_threshold,
        fp=counts.fp_macs * target.clocks_mac
        + counts.fp_weight_bytes * target.weight_byte_for(w)
        + counts.other_flops * target.clocks_flop,
        overhead=counts.layers * target.clocks_layer + target.clocks_inference,
    )


def layer_costs(network: str | NetworkGraph, target: Target) -> list[dict[str, Any]]:
    """Per executed step (a layer, or a layer fused with its BN and Sign): counts at the
    target's bus width and clocks per frame. Their clocks plus ``clocks_inference`` sum to
    :func:`cost_of`'s total."""
    graph = resolve(network)
    batch = _batch(graph)
    w = count_network(graph, target.bus_width).weights_bytes
    lx, wbyte = target.lxnorop_for(w), target.weight_byte_for(w)
    rows: list[dict[str, Any]] = []
    clocks_of: list[float] = []
    for s in steps_of(graph, target.bus_width):
        fp_macs = 0 if s.binary else s.macs
        clocks = (
            s.xnorops * lx
            + s.outputs * target.clocks_threshold
            + s.im2col * target.clocks_pack
            + fp_macs * target.clocks_mac
            + (0 if s.binary else s.weight_bytes * wbyte)
            + max(s.flops - 2 * fp_macs, 0) * target.clocks_flop
            + len(s.layers) * target.clocks_layer * batch
        ) / batch
        clocks_of.append(clocks)
        rows.append(
            {
                "layers": list(s.layers),
                "op": s.op,
                "binary": s.binary,
                "xnorops": s.xnorops // batch,
                "macs": s.macs // batch,
                "clocks": clocks,
                "share": 0.0,
            }
        )
    total = sum(clocks_of) + target.clocks_inference
    for r, c in zip(rows, clocks_of, strict=True):
        r["share"] = c / total if total else 0.0
    return rows
