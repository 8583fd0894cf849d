"""DenseNet (Huang et al., CVPR 2017): dense blocks of BN-ReLU-Conv layers, each fed with the
concatenation of all earlier feature maps of its block, joined by compressing transitions."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act, pool_linear
from latlab.encoders.builder import NetBuilder


def _densenet(blocks: tuple[int, ...], growth: int = 32, init: int = 64, bn_size: int = 4):
    def build(b: NetBuilder) -> str:
        """DenseNet-BC as in torchvision: growth 32, bottleneck 4x, compression 0.5.

        Every dense layer concatenates all earlier feature maps of its block (one Concat per
        layer) and each block ends with the concatenation of all of them.
        """
        x = conv_bn_act(b, b.input, init, 7, 2)
        x = b.maxpool(x, 3, 2, padding=1)
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

    return build


_PAPER = "Huang et al., Densely connected convolutional networks, CVPR 2017"
DENSENET121 = ZooModel("densenet121", "densenet", _densenet((6, 12, 24, 16)), _PAPER)
DENSENET201 = ZooModel("densenet201", "densenet", _densenet((6, 12, 48, 32)), _PAPER)
