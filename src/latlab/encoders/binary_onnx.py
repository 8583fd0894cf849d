"""ONNX export of binary layers, as *float emulation*.

ONNX has no bit-packed XNOR/popcount operator, so a binary layer is exported as the float
computation it stands for: ``BinaryGemm`` as ``Gemm`` with ±1 weights, ``BinaryConv`` as
``Pad`` (value +1) followed by ``Conv`` with ±1 weights; the ``Sign`` layers before them are
exported as ONNX ``Sign``. The result computes the same function (up to ``Sign(0)``, which is 0
in ONNX and +1 in latlab's binarisation) so that onnxruntime and torch can run every BNN, but
its latency is that of a float network of the same shape: measure BNNs with the ``bitpacked``
backend to time the binary arithmetic itself.

Registered lazily in :data:`latlab.encoders.onnx_export.EXPORTERS` (imported when a binary layer
is first exported), so that this module imports onnx_export and never the other way round.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from latlab.encoders.ir import Layer
from latlab.encoders.onnx_export import ExportContext


def _binarise_initializers(names: list[str], ctx: ExportContext) -> None:
    """Replace the seeded Gaussian weights ``names`` by their signs (±1, 0 mapped to +1)."""
    wanted = set(names)
    for i, init in enumerate(ctx.initializers):
        if init.name in wanted:
            w = numpy_helper.to_array(init)
            pm = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
            ctx.initializers[i].CopyFrom(numpy_helper.from_array(pm, init.name))


def export_binary_gemm(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    _binarise_initializers(w, ctx)
    node = helper.make_node(
        "Gemm", [*layer.inputs, *w], list(layer.outputs), name=layer.name, transB=1
    )
    return [node]


def export_binary_conv(layer: Layer, w: list[str], ctx: ExportContext) -> list[onnx.NodeProto]:
    _binarise_initializers(w, ctx)
    a = layer.attrs
    pads = [int(p) for p in a.get("pads", (0, 0, 0, 0))]
    nodes: list[onnx.NodeProto] = []
    x = layer.inputs[0]
    if any(pads):
        nd = len(pads) // 2
        onnx_pads = [0, 0, *pads[:nd], 0, 0, *pads[nd:]]
        padded = f"{layer.name}.padded"
        nodes.append(
            helper.make_node(
                "Pad",
                [
                    x,
                    ctx.ints(f"{layer.name}.pads", onnx_pads),
                    ctx.floats(f"{layer.name}.pad_value", float(a.get("pad_value", 1.0))),
                ],
                [padded],
                name=f"{layer.name}.pad",
                mode="constant",
            )
        )
        x = padded
    nodes.append(
        helper.make_node(
            "Conv",
            [x, *w],
            list(layer.outputs),
            name=layer.name,
            kernel_shape=list(a["kernel"]),
            strides=list(a.get("stride", (1, 1))),
            dilations=list(a.get("dilation", (1, 1))),
            group=1,
        )
    )
    return nodes
