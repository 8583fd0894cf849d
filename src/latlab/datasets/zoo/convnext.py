"""ConvNeXt (Liu et al., A ConvNet for the 2020s, CVPR 2022), as torchvision implements it.

The block is written channels-last, as torchvision's (and the paper's) code runs it: 7x7
depthwise conv, Transpose to NHWC, LayerNorm over channels, Linear (MatMul + bias Add) to 4x
width, GELU, Linear back, Transpose to NCHW, layer scale (Mul by a per-channel parameter) and
the residual Add. Stem and downsampling layers use a channels-first LayerNorm, which exports
as Transpose-LayerNormalization-Transpose. GELU is the ONNX ``Gelu`` op (opset 20; the export
raises the model's opset for it). Stochastic depth is training-only.
"""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel
from latlab.encoders.builder import NetBuilder

EPS = 1e-6


def layer_norm2d(b: NetBuilder, x: str) -> str:
    """torchvision's ``LayerNorm2d``: LayerNorm over the channels of an NCHW map."""
    y = b.layernorm(b.transpose(x, (0, 2, 3, 1)), eps=EPS)
    return b.transpose(y, (0, 3, 1, 2))


def _block(b: NetBuilder, x: str) -> str:
    c = b.shape(x)[1]
    y = b.conv(x, c, 7, padding=3, groups=c, bias=True)
    y = b.layernorm(b.transpose(y, (0, 2, 3, 1)), eps=EPS)
    y = b.add_layer("Gelu", [b.linear(y, 4 * c)])[0]
    y = b.transpose(b.linear(y, c), (0, 3, 1, 2))
    y = b.add_layer("Mul", [y], {}, [(c, 1, 1)])[0]  # layer scale
    return b.add(y, x)


def convnext_builder(depths: tuple[int, ...], dims: tuple[int, ...]):
    """The builder of the ConvNeXt of these depths and widths (:func:`_convnext`), for other
    modules (the held-out set's ConvNeXt-Tiny)."""
    return _convnext(depths, dims)


def _convnext(depths: tuple[int, ...], dims: tuple[int, ...]):
    def build(b: NetBuilder) -> str:
        """ConvNeXt: 4x4/4 patchify stem + LayerNorm, four stages of ConvNeXt blocks with
        LayerNorm + 2x2/2 conv between them, global pool, LayerNorm, FC."""
        x = layer_norm2d(b, b.conv(b.input, dims[0], 4, 4, padding=0, bias=True))
        for i, (n, dim) in enumerate(zip(depths, dims, strict=True)):
            if i:
                x = b.conv(layer_norm2d(b, x), dim, 2, 2, padding=0, bias=True)
            for _ in range(n):
                x = _block(b, x)
        # the head's LayerNorm2d on the 1x1 pooled map is LayerNorm of the flattened vector
        x = b.layernorm(b.flatten(b.global_avgpool(x)), eps=EPS)
        return b.gemm(x, 1000)

    return build


CONVNEXT_SMALL = ZooModel(
    "convnext_small",
    "convnext",
    _convnext((3, 3, 27, 3), (96, 192, 384, 768)),
    "Liu et al., A ConvNet for the 2020s, CVPR 2022",
)
