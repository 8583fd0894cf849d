"""GoogLeNet / Inception v1 (Szegedy et al., CVPR 2015) and SqueezeNet (Iandola et al., 2016)."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act, register_model
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


register_model(
    ZooModel(
        "googlenet",
        "googlenet",
        googlenet,
        "Szegedy et al., Going deeper with convolutions, CVPR 2015",
    )
)
for _v in ("1_0", "1_1"):
    register_model(
        ZooModel(
            f"squeezenet{_v}",
            "squeezenet",
            _squeezenet(_v),
            "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters, 2016",
        )
    )
