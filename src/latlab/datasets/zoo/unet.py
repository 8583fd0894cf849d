"""U-Net (Ronneberger et al., MICCAI 2015) in the layout of the common implementations.

As milesial/Pytorch-UNet (``UNet(n_channels=3, n_classes=2, bilinear=False)``): the paper's
64-128-256-512-1024 channel contracting path of double 3x3 convolutions and 2x2 max pools
and its expanding path of 2x2 transposed convolutions (stride 2, halving the channels),
Concat with the skip map and double 3x3 convolutions, ending in a 1x1 conv to the classes.
Unlike the paper the convolutions are padded (padding=1, so no cropping of the skip maps) and
each is followed by BatchNorm. The resolution must be a multiple of 16 (four poolings).
"""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act
from latlab.encoders.builder import NetBuilder

CLASSES = 2


def _double(b: NetBuilder, x: str, out: int) -> str:
    return conv_bn_act(b, conv_bn_act(b, x, out, 3), out, 3)


def up_conv(b: NetBuilder, x: str, out: int, kernel: int = 2, stride: int = 2) -> str:
    """``nn.ConvTranspose2d(in, out, kernel, stride)`` with bias (no padding)."""
    cin = b.shape(x)[1]
    attrs = {
        "kernel": (kernel, kernel),
        "stride": (stride, stride),
        "pads": (0, 0, 0, 0),
        "groups": 1,
    }
    return b.add_layer("ConvTranspose", [x], attrs, [(cin, out, kernel, kernel), (out,)])[0]


def unet(b: NetBuilder) -> str:
    """U-Net with 64 base channels: 4 downs, 4 ups, 2 classes."""
    skips = [_double(b, b.input, 64)]
    for c in (128, 256, 512, 1024):
        skips.append(_double(b, b.maxpool(skips[-1], 2, 2), c))
    x = skips.pop()
    for c in (512, 256, 128, 64):
        x = _double(b, b.concat([skips.pop(), up_conv(b, x, c)]), c)
    return b.conv(x, CLASSES, 1, padding=0, bias=True)


UNET = ZooModel(
    "unet",
    "unet",
    unet,
    "Ronneberger et al., U-Net: convolutional networks for biomedical image "
    "segmentation, MICCAI 2015",
    resolution=256,
    min_resolution=16,
    multiple_of=16,
)
