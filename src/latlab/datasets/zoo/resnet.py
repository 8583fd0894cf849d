"""ResNet (He et al., CVPR 2016) and DenseNet (Huang et al., CVPR 2017)."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act, pool_linear, register_model
from latlab.encoders.builder import NetBuilder


def _basic(b: NetBuilder, x: str, planes: int, stride: int) -> str:
    y = conv_bn_act(b, x, planes, 3, stride)
    y = conv_bn_act(b, y, planes, 3, activation="none")
    shortcut = x
    if stride != 1 or b.shape(x)[1] != planes:
        shortcut = conv_bn_act(b, x, planes, 1, stride, activation="none")
    return b.relu(b.add(y, shortcut))


def _bottleneck(b: NetBuilder, x: str, planes: int, stride: int) -> str:
    # ResNet v1.5 (torchvision): the stride is on the 3x3 convolution, not the first 1x1.
    out = planes * 4
    y = conv_bn_act(b, x, planes, 1)
    y = conv_bn_act(b, y, planes, 3, stride)
    y = conv_bn_act(b, y, out, 1, activation="none")
    shortcut = x
    if stride != 1 or b.shape(x)[1] != out:
        shortcut = conv_bn_act(b, x, out, 1, stride, activation="none")
    return b.relu(b.add(y, shortcut))


def _resnet(layers: tuple[int, ...], bottleneck: bool):
    block = _bottleneck if bottleneck else _basic

    def build(b: NetBuilder) -> str:
        """ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global pool, FC."""
        x = conv_bn_act(b, b.input, 64, 7, 2)
        x = b.maxpool(x, 3, 2, padding=1)
        for stage, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            for i in range(n):
                x = block(b, x, planes, 2 if stage > 0 and i == 0 else 1)
        return pool_linear(b, x)

    return build


def densenet121(b: NetBuilder) -> str:
    """DenseNet-121 (growth 32, bottleneck 4x, blocks 6-12-24-16, compression 0.5).

    As in torchvision, every dense layer concatenates all earlier feature maps of its block
    (one Concat per layer) and each block ends with the concatenation of all of them.
    """
    growth, bn_size = 32, 4
    x = conv_bn_act(b, b.input, 64, 7, 2)
    x = b.maxpool(x, 3, 2, padding=1)
    blocks = (6, 12, 24, 16)
    for i, n in enumerate(blocks):
        features = [x]
        for _ in range(n):
            cat = features[0] if len(features) == 1 else b.concat(features)
            y = b.conv(b.relu(b.bn(cat)), bn_size * growth, 1, padding=0)
            y = b.conv(b.relu(b.bn(y)), growth, 3, padding=1)
            features.append(y)
        x = b.concat(features)
        if i < len(blocks) - 1:
            y = b.conv(b.relu(b.bn(x)), b.shape(x)[1] // 2, 1, padding=0)
            x = b.avgpool(y, 2, 2)
    x = b.relu(b.bn(x))
    return pool_linear(b, x)


_RESNET_PAPER = "He et al., Deep residual learning for image recognition, CVPR 2016"
for _name, _layers, _bottle in (
    ("resnet18", (2, 2, 2, 2), False),
    ("resnet34", (3, 4, 6, 3), False),
    ("resnet50", (3, 4, 6, 3), True),
):
    register_model(ZooModel(_name, "resnet", _resnet(_layers, _bottle), _RESNET_PAPER))
register_model(
    ZooModel(
        "densenet121",
        "densenet",
        densenet121,
        "Huang et al., Densely connected convolutional networks, CVPR 2017",
    )
)
