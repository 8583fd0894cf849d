"""Binary layers in the IR: ``BinaryGemm`` and ``BinaryConv`` (weights and activations ±1).

A binary neural network (BNN) keeps full-precision first and last layers and replaces the
layers in between by *binary* ones: weights and input activations are ±1, stored one bit each
and bit-packed into machine words, and a dot product of fan-in K becomes XNOR + popcount over
``⌈K/Bus⌉`` words (``dot = K − 2·popcount(a XOR w)`` with bit 1 standing for −1). The usual
block is ``binary layer → BatchNormalization → Sign``; BN followed by Sign is one threshold
comparison per output at inference time.

Counting conventions of the two ops (see :mod:`latlab.encoders.ops` for the others):

* ``macs`` are *binary* MACs, ``O·K`` (outputs times fan-in): what the float counterpart would
  cost; ``flops`` are 0, since a binary layer does no floating-point work. Per-kind totals
  (``op_macs['binfc']``, ``op_macs['binconv']``) keep them apart from float MACs.
* ``weight_bits = act_bits = 1``: ``weight_bytes`` is one bit per weight.
* :func:`xnorops` counts the word operations on a target with bus width ``Bus``:
  ``O·⌈K/Bus⌉`` (Shakkouf & Gromov's XNOROP: one XNOR + popcount over one ``Bus``-bit word).
  The fan-in of a convolution is its whole receptive field ``C_in·k_h·k_w`` packed
  contiguously (the paper's filter packing), not ``k_h·k_w`` words of ``⌈C_in/Bus⌉``.

Padding of binary convolutions: a zero cannot be represented in ±1, so ``BinaryConv`` pads
with **+1** (attribute ``pad_value``, as Larq's ``pad_values=1``); every one of the ``K`` taps
is then computed, which is what a bit-packed kernel does anyway.

Only groups=1 binary convolutions are built (the bit-packed backend supports nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latlab.encoders.builder import NetBuilder, int_tuple, same_pads
from latlab.encoders.ir import Layer, NetworkGraph, Shape, numel
from latlab.encoders.ops import OpRule, infer_shapes

#: Op types of binary layers and their kinds.
BINARY_OPS: dict[str, str] = {"BinaryGemm": "binfc", "BinaryConv": "binconv"}
#: Compute ops whose BatchNormalization + Sign successors fuse into one threshold step.
FUSABLE_OPS = frozenset({"BinaryGemm", "BinaryConv", "Gemm", "Conv", "MatMul"})
#: Bus widths (bits per machine word) the XNOROP model accepts.
BUS_WIDTHS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)


def is_binary(layer: Layer) -> bool:
    """Whether ``layer`` is a binary (XNOR/popcount) layer."""
    return layer.op in BINARY_OPS


def fan_in(layer: Layer) -> int:
    """Inputs per output of a binary layer: K of ``BinaryGemm``, C·kh·kw of ``BinaryConv``."""
    return numel(layer.weight_shapes[0][1:])


def words(bits: int, bus_width: int) -> int:
    """Number of ``bus_width``-bit words that hold ``bits`` bits."""
    return -(-bits // bus_width)


def xnorops(layer: Layer, bus_width: int) -> int:
    """XNOROPs of one binary layer over its whole output tensor (batch included): O·⌈K/Bus⌉."""
    if not is_binary(layer):
        return 0
    return numel(layer.output_shape) * words(fan_in(layer), bus_width)


def operand_bits(layer: Layer) -> int:
    """Input bits a binary layer reads after im2col: ``P·K`` (P output positions, batch included).

    For ``BinaryGemm`` this is the input vector (``N·K``); for ``BinaryConv`` every output
    position has its own packed receptive field of ``K`` bits.
    """
    if not is_binary(layer):
        return 0
    channels = layer.weight_shapes[0][0]
    positions = numel(layer.output_shape) // channels
    return positions * fan_in(layer)


def _sole_successor(graph: NetworkGraph, i: int) -> int | None:
    succ = graph.successors[i]
    if len(succ) != 1 or graph.layers[i].outputs[0] in graph.outputs:
        return None
    return succ[0]


def fused_tail(graph: NetworkGraph, i: int) -> tuple[int, ...]:
    """Indices of the BN and/or Sign that a BNN engine fuses with compute layer ``i``.

    ``compute → Sign`` and ``compute → BN → Sign`` (each intermediate tensor with a single
    consumer, not a network output) are one step: every output is compared with a per-channel
    threshold and stored as a bit, so the pre-activation never exists as a tensor. Shared by
    the bit-packed backend and the memory/cost model so that both see the same steps.
    """
    if graph.layers[i].op not in FUSABLE_OPS:
        return ()
    nxt = _sole_successor(graph, i)
    if nxt is None:
        return ()
    op = graph.layers[nxt].op
    if op == "Sign":
        return (nxt,)
    if op == "BatchNormalization":
        after = _sole_successor(graph, nxt)
        if after is not None and graph.layers[after].op == "Sign":
            return (nxt, after)
    return ()


# --------------------------------------------------------------------------- cost rules


def _cost_binary(layer: Layer) -> tuple[int, int, int]:
    macs = numel(layer.output_shape) * fan_in(layer)
    return macs, 0, sum(numel(w) for w in layer.weight_shapes)


def _shape_binary_gemm(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    return infer_shapes("Gemm", ins, a, ws)


def _shape_binary_conv(
    ins: Sequence[Shape], a: dict[str, Any], ws: Sequence[Shape]
) -> tuple[Shape, ...]:
    return infer_shapes("Conv", ins, a, ws)


#: The binary ops' rules, named in :data:`latlab.encoders.ops.RULES` (loaded on first use).
BINARY_GEMM_RULE = OpRule("binfc", _cost_binary, _shape_binary_gemm)
BINARY_CONV_RULE = OpRule("binconv", _cost_binary, _shape_binary_conv)


# --------------------------------------------------------------------------- builder helpers


def sign(b: NetBuilder, x: str) -> str:
    """Binarise ``x`` to ±1 (``Sign``; latlab maps 0 to +1, see the bit-packed backend)."""
    return b.act(x, "Sign")


def binary_gemm(b: NetBuilder, x: str, out_features: int, **kw: Any) -> str:
    """Binary fully connected layer on a 2-D ±1 input: ``y = x·Wᵀ`` with ``W ∈ {±1}`` (no bias)."""
    in_features = b.shape(x)[-1]
    return b.add_layer(
        "BinaryGemm",
        [x],
        {"transB": 1},
        [(out_features, in_features)],
        weight_bits=1,
        act_bits=1,
        **kw,
    )[0]


def binary_conv(
    b: NetBuilder,
    x: str,
    out_channels: int,
    kernel: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = "same",
    dilation: int | Sequence[int] = 1,
    **kw: Any,
) -> str:
    """Binary 2-D convolution (groups=1, no bias) on a ±1 input, padded with +1."""
    k = int_tuple(kernel)
    d = int_tuple(dilation)
    if padding == "same":
        pads = same_pads(k, d)
    elif isinstance(padding, int):
        pads = (padding,) * 4
    else:
        p = tuple(int(v) for v in padding)  # type: ignore[union-attr]
        pads = p + p if len(p) == 2 else p
    cin = b.shape(x)[1]
    attrs = {
        "kernel": k,
        "stride": int_tuple(stride),
        "pads": pads,
        "dilation": d,
        "groups": 1,
        "pad_value": 1.0,
    }
    return b.add_layer(
        "BinaryConv",
        [x],
        attrs,
        [(out_channels, cin, *k)],
        weight_bits=1,
        act_bits=1,
        **kw,
    )[0]
