"""The quantised kernels onnxruntime executes for an INT8 (QDQ) model, as kernel features.

After its graph optimisations onnxruntime fuses each ``DequantizeLinear -> op ->
QuantizeLinear`` group of a QDQ model into one quantised kernel. Profiled on this CPU
(onnxruntime 1.32, ResNet-18 and ViT-S/16 quantised by :mod:`latlab.encoders.quantize`), the
executed kernels are ``com.microsoft.QLinearConv``, ``com.microsoft.QGemm`` (every Gemm and
weight MatMul), ``QLinearMatMul`` (activation x activation matmuls of attention),
``com.microsoft.QLinearAdd`` / ``QLinearMul`` / ``QLinearSoftmax`` / ``QLinearConcat`` /
``QLinearGlobalAveragePool``, ``com.microsoft.NhwcMaxPool`` (max pooling straight on uint8),
and the ``QuantizeLinear`` / ``DequantizeLinear`` left at
the boundaries of ops that stay in float (LayerNormalization, Erf, Div, ...).

:data:`QUANT_KERNELS` maps each to the float op whose feature code applies
(:func:`latlab.datasets.bench.kernels_runtime.kernel_features`) and to the positions of its
data inputs (the scales and zero points are dropped), and says how many bytes an element of
its inputs, weights and outputs takes (int8/uint8: 1, int32 bias and float: 4). Quantised
convolutions and pools run in NHWC (``channels_last``, between ``Transpose`` nodes); their
shapes are read back as NCHW for the features. The family
keeps the quantised op's name (``com.microsoft.QLinearConv/dw``): an int8 convolution is a
different kernel from a float one and gets its own model.

:func:`executed_precision` is the runtime-level precision check of a network: the fraction of
its executed MACs in int8 kernels and the compute kernels that run in float.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class QuantKernel:
    """How a quantised op's features are computed: as ``like`` on the inputs ``data``."""

    like: str  # the float op whose features apply
    data: tuple[int, ...]  # positions of the data inputs (activations, weight, bias)
    in_bytes: int = 1
    w_bytes: int = 1
    out_bytes: int = 1
    int8_compute: bool = True


#: Quantised op (without domain) -> its feature view (see the module docstring).
QUANT_KERNELS: dict[str, QuantKernel] = {
    "QLinearConv": QuantKernel("Conv", (0, 3, 8)),
    "ConvInteger": QuantKernel("Conv", (0, 1), out_bytes=4),
    "QGemm": QuantKernel("Gemm", (0, 3, 6)),
    "QLinearMatMul": QuantKernel("MatMul", (0, 3)),
    "MatMulInteger": QuantKernel("MatMul", (0, 1), out_bytes=4),
    "MatMulIntegerToFloat": QuantKernel("MatMul", (0, 1), out_bytes=4),
    "DynamicQuantizeMatMul": QuantKernel("MatMul", (0, 1), in_bytes=4, out_bytes=4),
    "QLinearAdd": QuantKernel("Add", (0, 3)),
    "QLinearMul": QuantKernel("Mul", (0, 3)),
    "QLinearSoftmax": QuantKernel("Softmax", (0,)),
    "QLinearSigmoid": QuantKernel("Sigmoid", (0,)),
    "QLinearLeakyRelu": QuantKernel("LeakyRelu", (0,)),
    "QLinearGlobalAveragePool": QuantKernel("GlobalAveragePool", (0,)),
    "QLinearAveragePool": QuantKernel("AveragePool", (0,)),
    "NhwcMaxPool": QuantKernel("MaxPool", (0,)),
    "QLinearConcat": QuantKernel("Concat", ()),  # inputs come in (x, scale, zp) triples
    "QuantizeLinear": QuantKernel("QuantizeLinear", (0,), in_bytes=4),
    "DequantizeLinear": QuantKernel("DequantizeLinear", (0,), out_bytes=4),
}
#: Compute kernels (their cost is MACs) that run in float.
FLOAT_COMPUTE = frozenset({"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul",
                           "Gemm", "FusedGemm", "Attention", "MultiHeadAttention"})  # fmt: skip
#: Compute kernels that run on int8 operands.
INT8_COMPUTE = frozenset(k for k, v in QUANT_KERNELS.items() if v.int8_compute and
                         v.like in ("Conv", "Gemm", "MatMul"))  # fmt: skip


def quant_kernel_features(
    op: str,
    attrs: dict[str, Any],
    inputs: Sequence[Shape | None],
    outputs: Sequence[Shape | None],
    weight: Sequence[bool],
) -> tuple[str, dict[str, float]] | None:
    """(family, features) of a quantised kernel, or None for any other op."""
    from latlab.datasets.bench.kernels_runtime import kernel_features

    base = op.rsplit(".", 1)[-1]
    spec = QUANT_KERNELS.get(base)
    if spec is None:
        return None
    if base == "QLinearConcat":  # (y_scale, y_zp, then x, scale, zp per input)
        data = tuple(range(2, len(inputs), 3))
    else:
        data = tuple(i for i in spec.data if i < len(inputs))
    ins = [inputs[i] for i in data]
    wts = [weight[i] if i < len(weight) else False for i in data]
    outs = list(outputs)
    if attrs.get("channels_last") or base == "NhwcMaxPool":
        # onnxruntime runs quantised convolutions and pools in NHWC (between Transposes):
        # the feature code reads NCHW
        ins = [_nchw(s) if not w else s for s, w in zip(ins, wts, strict=True)]
        outs = [_nchw(s) for s in outs]
    family, f = kernel_features(spec.like, attrs, ins, outs, wts)
    # kernel_features counts 4 bytes an element; the quantised kernel moves fewer
    f["bytes_in"] = spec.in_bytes * f["in_elems"]
    f["bytes_out"] = spec.out_bytes * f["out_elems"]
    f["bytes_w"] = spec.w_bytes * f["w_elems"]
    suffix = family[len(spec.like) :] if family.startswith(spec.like) else ""
    return op + suffix, f


def _nchw(shape: Shape | None) -> Shape | None:
    if shape is None or len(shape) != 4:
        return shape
    n, h, w, c = shape
    return (n, c, h, w)


def kernel_precision(op: str) -> str:
    """``int8`` for an int8 compute kernel, ``fp32`` for a float one, else ``other``."""
    base = op.rsplit(".", 1)[-1]
    if base in INT8_COMPUTE:
        return "int8"
    if base in FLOAT_COMPUTE:
        return "fp32"
    return "other"


def executed_precision(network: Any, threads: int = 1) -> dict[str, Any]:
    """The precision of what onnxruntime executes for ``network``'s INT8 model (batch 1).

    ``label`` is ``int8`` when every MAC of the executed compute kernels is in an int8 kernel,
    ``mixed`` when some are float, ``fp32`` when none is int8; ``int8_mac_fraction``, the
    float compute kernels (op -> count) and the conversions (``QuantizeLinear`` /
    ``DequantizeLinear`` kernels) that float ops cost.
    """
    from latlab.datasets.bench.kernels_runtime import runtime_kernels

    kernels = runtime_kernels(network, threads=threads, precision="int8")
    macs = {"int8": 0.0, "fp32": 0.0}
    float_ops: Counter[str] = Counter()
    conversions = 0
    for k in kernels:
        kind = kernel_precision(k.op)
        if kind in macs:
            macs[kind] += k.features.get("macs", 0.0)
        if kind == "fp32":
            float_ops[k.op] += 1
        if k.op.rsplit(".", 1)[-1] in ("QuantizeLinear", "DequantizeLinear"):
            conversions += 1
    total = macs["int8"] + macs["fp32"]
    frac = macs["int8"] / total if total else 0.0
    label = "int8" if total and not float_ops else ("fp32" if frac == 0 else "mixed")
    return {
        "label": label,
        "int8_mac_fraction": frac,
        "float_kernels": dict(float_ops),
        "conversions": conversions,
        "kernels": len(kernels),
    }
