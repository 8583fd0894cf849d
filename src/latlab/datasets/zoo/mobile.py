"""Mobile networks: MobileNet V1/V2/V3, MNASNet, EfficientNet-B0/B2/B4 and ShuffleNet V2."""

from __future__ import annotations

import math

from latlab.datasets.zoo.common import (
    ZooModel,
    conv_bn_act,
    make_divisible,
    pool_linear,
    squeeze_excitation,
)
from latlab.encoders.builder import NetBuilder


def inverted_residual(
    b: NetBuilder,
    x: str,
    out: int,
    expanded: int,
    kernel: int,
    stride: int,
    activation: str,
    se_squeeze: int = 0,
    se_activation: str = "relu",
    se_gate: str = "hardsigmoid",
) -> str:
    """Expand 1x1 (skipped when not expanding), depthwise, optional SE, project 1x1, residual."""
    cin = b.shape(x)[1]
    y = x
    if expanded != cin:
        y = conv_bn_act(b, y, expanded, 1, activation=activation)
    y = conv_bn_act(b, y, expanded, kernel, stride, activation, groups=expanded)
    if se_squeeze:
        y = squeeze_excitation(b, y, se_squeeze, se_activation, se_gate)
    y = conv_bn_act(b, y, out, 1, activation="none")
    return b.add(x, y) if stride == 1 and cin == out else y


def mobilenet_v2(b: NetBuilder) -> str:
    """MobileNetV2 (Sandler et al., CVPR 2018), width 1.0, ReLU6."""
    x = conv_bn_act(b, b.input, 32, 3, 2, "relu6")
    for t, c, n, s in (
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    ):  # fmt: skip
        for i in range(n):
            hidden = round(b.shape(x)[1] * t)
            x = inverted_residual(b, x, c, hidden, 3, s if i == 0 else 1, "relu6")
    x = conv_bn_act(b, x, 1280, 1, activation="relu6")
    return pool_linear(b, x)


# (input, kernel, expanded, out, SE, activation, stride) as in the MobileNetV3 paper's tables.
_V3_LARGE = (
    (16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1), (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)  # fmt: skip
_V3_SMALL = (
    (16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1), (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1), (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1), (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2), (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
)  # fmt: skip


def _mobilenet_v3(config: tuple[tuple[int, int, int, int, bool, str, int], ...], last: int):
    def build(b: NetBuilder) -> str:
        """MobileNetV3 (Howard et al., ICCV 2019): hard-swish stem, bneck blocks with SE
        (squeeze to expanded/4 rounded to 8, hard-sigmoid gate), 1x1 conv, pool, 2-layer head."""
        x = conv_bn_act(b, b.input, 16, 3, 2, "hardswish")
        for _cin, k, expanded, out, se, activation, stride in config:
            squeeze = make_divisible(expanded // 4, 8) if se else 0
            x = inverted_residual(b, x, out, expanded, k, stride, activation, squeeze)
        x = conv_bn_act(b, x, 6 * b.shape(x)[1], 1, activation="hardswish")
        x = b.flatten(b.global_avgpool(x))
        x = b.hardswish(b.gemm(x, last))
        return b.gemm(x, 1000)

    return build


def mnasnet1_0(b: NetBuilder) -> str:
    """MNASNet-B1 1.0 as in torchvision (Tan et al., CVPR 2019): no SE, ReLU everywhere."""
    x = conv_bn_act(b, b.input, 32, 3, 2)
    x = conv_bn_act(b, x, 32, 3, 1, groups=32)
    x = conv_bn_act(b, x, 16, 1, activation="none")
    for out, k, s, e, n in (
        (24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3),
        (96, 3, 1, 6, 2), (192, 5, 2, 6, 4), (320, 3, 1, 6, 1),
    ):  # fmt: skip
        for i in range(n):
            cin = b.shape(x)[1]
            x = inverted_residual(b, x, out, cin * e, k, s if i == 0 else 1, "relu")
    x = conv_bn_act(b, x, 1280, 1)
    return pool_linear(b, x, reduce_mean=True)


def _efficientnet(width: float, depth: float):
    def build(b: NetBuilder) -> str:
        """EfficientNet (Tan & Le, ICML 2019) as in torchvision: B0's MBConv stages with
        channels scaled by ``width`` (rounded to 8) and repeats by ``depth`` (rounded up); SE
        squeezes to in/4 (SiLU, sigmoid gate); SiLU activations; the last 1x1 conv has 4x the
        last stage's channels. Stochastic depth is training-only."""
        ch = lambda c: make_divisible(c * width, 8)  # noqa: E731
        x = conv_bn_act(b, b.input, ch(32), 3, 2, "silu")
        for e, k, s, out, n in (
            (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
            (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
        ):  # fmt: skip
            for i in range(math.ceil(n * depth)):
                cin = b.shape(x)[1]
                expanded = make_divisible(cin * e, 8)
                x = inverted_residual(
                    b, x, ch(out), expanded, k, s if i == 0 else 1, "silu",
                    se_squeeze=max(1, cin // 4), se_activation="silu", se_gate="sigmoid",
                )  # fmt: skip
        x = conv_bn_act(b, x, 4 * b.shape(x)[1], 1, activation="silu")
        return pool_linear(b, x)

    return build


def mobilenet_v1(b: NetBuilder) -> str:
    """MobileNetV1 1.0 (Howard et al., 2017, Table 1): a 3x3/2 stem, 13 depthwise-separable
    pairs (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU), global pool, FC."""
    x = conv_bn_act(b, b.input, 32, 3, 2)
    for out, s in (
        (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
    ):  # fmt: skip
        c = b.shape(x)[1]
        x = conv_bn_act(b, x, c, 3, s, groups=c)
        x = conv_bn_act(b, x, out, 1)
    return pool_linear(b, x)


def _shuffle_unit(b: NetBuilder, x: str, out: int, stride: int) -> str:
    half = out // 2
    if stride == 1:
        x1, x2 = b.split(x, (b.shape(x)[1] // 2,) * 2)
    else:
        x1 = conv_bn_act(b, x, b.shape(x)[1], 3, stride, "none", groups=b.shape(x)[1])
        x1 = conv_bn_act(b, x1, half, 1)
        x2 = x
    y = conv_bn_act(b, x2, half, 1)
    y = conv_bn_act(b, y, half, 3, stride, "none", groups=half)
    y = conv_bn_act(b, y, half, 1)
    return b.channel_shuffle(b.concat([x1, y]), 2)


def _shufflenet_v2(stages: tuple[int, int, int]):
    def build(b: NetBuilder) -> str:
        """ShuffleNet V2 (Ma et al., ECCV 2018): channel split, two branches, shuffle; stages
        of 4-8-4 units with ``stages`` output channels, a 1x1 conv to 1024, pool, FC."""
        x = conv_bn_act(b, b.input, 24, 3, 2)
        x = b.maxpool(x, 3, 2, padding=1)
        for out, n in zip(stages, (4, 8, 4), strict=True):
            for i in range(n):
                x = _shuffle_unit(b, x, out, 2 if i == 0 else 1)
        x = conv_bn_act(b, x, 1024, 1)
        return pool_linear(b, x, reduce_mean=True)

    return build


MOBILENET_V2 = ZooModel(
    "mobilenet_v2",
    "mobilenet",
    mobilenet_v2,
    "Sandler et al., MobileNetV2: inverted residuals and linear bottlenecks, CVPR 2018",
)
_V3_PAPER = "Howard et al., Searching for MobileNetV3, ICCV 2019"
MOBILENET_V3_SMALL = ZooModel(
    "mobilenet_v3_small", "mobilenet", _mobilenet_v3(_V3_SMALL, 1024), _V3_PAPER
)
MOBILENET_V3_LARGE = ZooModel(
    "mobilenet_v3_large", "mobilenet", _mobilenet_v3(_V3_LARGE, 1280), _V3_PAPER
)
MNASNET1_0 = ZooModel(
    "mnasnet1_0",
    "mnasnet",
    mnasnet1_0,
    "Tan et al., MnasNet: platform-aware neural architecture search for mobile, CVPR 2019",
)
EFFICIENTNET_B0 = ZooModel(
    "efficientnet_b0",
    "efficientnet",
    _efficientnet(1.0, 1.0),
    "Tan & Le, EfficientNet: rethinking model scaling for CNNs, ICML 2019",
)
SHUFFLENET_V2_X1_0 = ZooModel(
    "shufflenet_v2_x1_0",
    "shufflenet",
    _shufflenet_v2((116, 232, 464)),
    "Ma et al., ShuffleNet V2: practical guidelines for efficient CNN design, ECCV 2018",
)
MOBILENET_V1 = ZooModel(
    "mobilenet_v1",
    "mobilenet",
    mobilenet_v1,
    "Howard et al., MobileNets: efficient CNNs for mobile vision applications, 2017",
)
# torchvision's evaluation crops: 288 for B2 (the paper: 260) and 380 for B4.
_EFFICIENTNET_PAPER = "Tan & Le, EfficientNet: rethinking model scaling for CNNs, ICML 2019"
EFFICIENTNET_B2 = ZooModel(
    "efficientnet_b2", "efficientnet", _efficientnet(1.1, 1.2), _EFFICIENTNET_PAPER, resolution=288
)
EFFICIENTNET_B4 = ZooModel(
    "efficientnet_b4", "efficientnet", _efficientnet(1.4, 1.8), _EFFICIENTNET_PAPER, resolution=380
)
SHUFFLENET_V2_X1_5 = ZooModel(
    "shufflenet_v2_x1_5",
    "shufflenet",
    _shufflenet_v2((176, 352, 704)),
    "Ma et al., ShuffleNet V2: practical guidelines for efficient CNN design, ECCV 2018",
)
