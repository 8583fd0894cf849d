"""GoogLeNet / Inception v1 (Szegedy et al., CVPR 2015), Inception-v4 (Szegedy et al., AAAI
2017) and SqueezeNet (Iandola et al., 2016)."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act, pool_linear
from latlab.encoders.builder import NetBuilder


def _inception(
    b: NetBuilder, x: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int
) -> str:
    b1 = conv_bn_act(b, x, c1, 1)
    b2 = conv_bn_act(b, conv_bn_act(b, x, c3r, 1), c3, 3)
    # torchvision uses a 3x3 convolution in the "5x5" branch (kept for its weights): so do we,
    # so that the figures match torchvision's published ones.
    b3 = conv_bn_act(b, conv_bn_act(b, x, c5r, 1), c5, 3)
    b4 = conv_bn_act(b, b.maxpool(x, 3, 1, padding=1, ceil_mode=True), pool_proj, 1)
    return b.concat([b1, b2, b3, b4])


def googlenet(b: NetBuilder) -> str:
    """GoogLeNet as in torchvision: BN after every convolution (no LRN), the "5x5" branch as
    3x3, no auxiliary classifiers (they are training-only) and no input transform."""
    x = conv_bn_act(b, b.input, 64, 7, 2)
    x = b.maxpool(x, 3, 2, ceil_mode=True)
    x = conv_bn_act(b, x, 64, 1)
    x = conv_bn_act(b, x, 192, 3)
    x = b.maxpool(x, 3, 2, ceil_mode=True)
    x = _inception(b, x, 64, 96, 128, 16, 32, 32)
    x = _inception(b, x, 128, 128, 192, 32, 96, 64)
    x = b.maxpool(x, 3, 2, ceil_mode=True)
    for cfg in (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ):
        x = _inception(b, x, *cfg)
    x = b.maxpool(x, 2, 2, ceil_mode=True)
    x = _inception(b, x, 256, 160, 320, 32, 128, 128)
    x = _inception(b, x, 384, 192, 384, 48, 128, 128)
    x = b.flatten(b.global_avgpool(x))
    return b.gemm(x, 1000)


# --------------------------------------------------------------------------- Inception-v4
# As timm's ``inception_v4`` (Cadene's port of the TensorFlow-slim model of the paper's
# Figures 3-9): every convolution is Conv (no bias) + BN + ReLU, "valid" where the paper marks
# V; the branches' average pools exclude the padding. The BN epsilon (1e-3) does not change
# any count.


def _c(
    b: NetBuilder, x: str, out: int, k: int | tuple[int, int] = 1, s: int = 1, p: int | None = None
) -> str:
    """Conv-BN-ReLU, "same" padding unless ``p`` (0: valid) is given."""
    return conv_bn_act(b, x, out, k, s, padding=p)


def _chain(b: NetBuilder, x: str, *convs: tuple[int, int | tuple[int, int]]) -> str:
    for out, k in convs:
        x = _c(b, x, out, k)
    return x


def _avg_branch(b: NetBuilder, x: str, out: int) -> str:
    return _c(b, b.avgpool(x, 3, 1, padding=1), out)


def _inception_a(b: NetBuilder, x: str) -> str:
    return b.concat(
        [
            _c(b, x, 96),
            _chain(b, x, (64, 1), (96, 3)),
            _chain(b, x, (64, 1), (96, 3), (96, 3)),
            _avg_branch(b, x, 96),
        ]
    )


def _inception_b(b: NetBuilder, x: str) -> str:
    return b.concat(
        [
            _c(b, x, 384),
            _chain(b, x, (192, 1), (224, (1, 7)), (256, (7, 1))),
            _chain(b, x, (192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))),
            _avg_branch(b, x, 128),
        ]
    )


def _inception_c(b: NetBuilder, x: str) -> str:
    y1 = _c(b, x, 384)
    y2 = _chain(b, x, (384, 1), (448, (3, 1)), (512, (1, 3)))
    return b.concat(
        [
            _c(b, x, 256),
            _c(b, y1, 256, (1, 3)),
            _c(b, y1, 256, (3, 1)),
            _c(b, y2, 256, (1, 3)),
            _c(b, y2, 256, (3, 1)),
            _avg_branch(b, x, 256),
        ]
    )


def inception_v4(b: NetBuilder) -> str:
    """Inception-v4: stem (Figure 3), 4x Inception-A, Reduction-A (k, l, m, n = 192, 224, 256,
    384), 7x Inception-B, Reduction-B, 3x Inception-C, global pool, FC (1000 classes)."""
    x = _c(b, b.input, 32, 3, 2, p=0)
    x = _c(b, x, 32, 3, p=0)
    x = _c(b, x, 64, 3)
    x = b.concat([b.maxpool(x, 3, 2), _c(b, x, 96, 3, 2, p=0)])
    x = b.concat(
        [
            _c(b, _c(b, x, 64), 96, 3, p=0),
            _c(b, _chain(b, x, (64, 1), (64, (1, 7)), (64, (7, 1))), 96, 3, p=0),
        ]
    )
    x = b.concat([_c(b, x, 192, 3, 2, p=0), b.maxpool(x, 3, 2)])
    for _ in range(4):
        x = _inception_a(b, x)
    x = b.concat(
        [
            _c(b, x, 384, 3, 2, p=0),
            _c(b, _chain(b, x, (192, 1), (224, 3)), 256, 3, 2, p=0),
            b.maxpool(x, 3, 2),
        ]
    )
    for _ in range(7):
        x = _inception_b(b, x)
    x = b.concat(
        [
            _c(b, _c(b, x, 192), 192, 3, 2, p=0),
            _c(b, _chain(b, x, (256, 1), (256, (1, 7)), (320, (7, 1))), 320, 3, 2, p=0),
            b.maxpool(x, 3, 2),
        ]
    )
    for _ in range(3):
        x = _inception_c(b, x)
    return pool_linear(b, x)


def _fire(b: NetBuilder, x: str, squeeze: int, e1: int, e3: int) -> str:
    s = b.relu(b.conv(x, squeeze, 1, padding=0, bias=True))
    y1 = b.relu(b.conv(s, e1, 1, padding=0, bias=True))
    y3 = b.relu(b.conv(s, e3, 3, padding=1, bias=True))
    return b.concat([y1, y3])


def _squeezenet(version: str):
    def build(b: NetBuilder) -> str:
        """SqueezeNet 1.0 (paper) or 1.1 (the 2.4x cheaper revision of the SqueezeNet repo)."""
        pool = lambda t: b.maxpool(t, 3, 2, ceil_mode=True)  # noqa: E731
        if version == "1_0":
            x = pool(b.relu(b.conv(b.input, 96, 7, 2, padding=0, bias=True)))
            x = _fire(b, x, 16, 64, 64)
            x = _fire(b, x, 16, 64, 64)
            x = pool(_fire(b, x, 32, 128, 128))
            x = _fire(b, x, 32, 128, 128)
            x = _fire(b, x, 48, 192, 192)
            x = _fire(b, x, 48, 192, 192)
            x = pool(_fire(b, x, 64, 256, 256))
            x = _fire(b, x, 64, 256, 256)
        else:
            x = pool(b.relu(b.conv(b.input, 64, 3, 2, padding=0, bias=True)))
            x = pool(_fire(b, _fire(b, x, 16, 64, 64), 16, 64, 64))
            x = pool(_fire(b, _fire(b, x, 32, 128, 128), 32, 128, 128))
            for squeeze, e in ((48, 192), (48, 192), (64, 256), (64, 256)):
                x = _fire(b, x, squeeze, e, e)
        x = b.relu(b.conv(x, 1000, 1, padding=0, bias=True))
        return b.flatten(b.global_avgpool(x))

    return build


GOOGLENET = ZooModel(
    "googlenet",
    "googlenet",
    googlenet,
    "Szegedy et al., Going deeper with convolutions, CVPR 2015",
)
_SQUEEZENET_PAPER = (
    "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters, 2016"
)
SQUEEZENET1_0 = ZooModel("squeezenet1_0", "squeezenet", _squeezenet("1_0"), _SQUEEZENET_PAPER)
SQUEEZENET1_1 = ZooModel("squeezenet1_1", "squeezenet", _squeezenet("1_1"), _SQUEEZENET_PAPER)
INCEPTION_V4 = ZooModel(
    "inception_v4",
    "inception",
    inception_v4,
    "Szegedy et al., Inception-v4, Inception-ResNet and the impact of residual "
    "connections on learning, AAAI 2017",
    resolution=299,
    min_resolution=75,
)
