"""ResNet (He et al., CVPR 2016) and ResNeXt (Xie et al., CVPR 2017)."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act, pool_linear
from latlab.encoders.builder import NetBuilder


def _basic(b: NetBuilder, x: str, planes: int, stride: int) -> str:
    y = conv_bn_act(b, x, planes, 3, stride)
    y = conv_bn_act(b, y, planes, 3, activation="none")
    shortcut = x
    if stride != 1 or b.shape(x)[1] != planes:
        shortcut = conv_bn_act(b, x, planes, 1, stride, activation="none")
    return b.relu(b.add(y, shortcut))


def _bottleneck(
    b: NetBuilder, x: str, planes: int, stride: int, groups: int = 1, width_per_group: int = 64
) -> str:
    # ResNet v1.5 (torchvision): the stride is on the 3x3 convolution, not the first 1x1.
    # ResNeXt: the 3x3 is a grouped convolution of `groups` paths of `width_per_group`
    # channels at the first stage's scale (torchvision's width = planes * wpg / 64 * groups).
    out = planes * 4
    width = int(planes * (width_per_group / 64.0)) * groups
    y = conv_bn_act(b, x, width, 1)
    y = conv_bn_act(b, y, width, 3, stride, groups=groups)
    y = conv_bn_act(b, y, out, 1, activation="none")
    shortcut = x
    if stride != 1 or b.shape(x)[1] != out:
        shortcut = conv_bn_act(b, x, out, 1, stride, activation="none")
    return b.relu(b.add(y, shortcut))


def resnet_builder(
    layers: tuple[int, ...], bottleneck: bool, groups: int = 1, width_per_group: int = 64
):
    def block(b: NetBuilder, x: str, planes: int, stride: int) -> str:
        if bottleneck:
            return _bottleneck(b, x, planes, stride, groups, width_per_group)
        return _basic(b, x, planes, stride)

    def build(b: NetBuilder) -> str:
        """ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global pool, FC."""
        x = conv_bn_act(b, b.input, 64, 7, 2)
        x = b.maxpool(x, 3, 2, padding=1)
        for stage, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            for i in range(n):
                x = block(b, x, planes, 2 if stage > 0 and i == 0 else 1)
        return pool_linear(b, x)

    return build


#: The name the registrations below use.


_RESNET_PAPER = "He et al., Deep residual learning for image recognition, CVPR 2016"
RESNET18 = ZooModel("resnet18", "resnet", resnet_builder((2, 2, 2, 2), False), _RESNET_PAPER)
RESNET34 = ZooModel("resnet34", "resnet", resnet_builder((3, 4, 6, 3), False), _RESNET_PAPER)
RESNET50 = ZooModel("resnet50", "resnet", resnet_builder((3, 4, 6, 3), True), _RESNET_PAPER)
RESNEXT101_32X8D = ZooModel(
    "resnext101_32x8d",
    "resnext",
    resnet_builder((3, 4, 23, 3), True, groups=32, width_per_group=8),
    "Xie et al., Aggregated residual transformations for deep neural networks, CVPR 2017",
)
