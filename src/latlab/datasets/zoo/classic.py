"""AlexNet and VGG: plain stacks of convolutions with large fully connected heads."""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, adaptive_avgpool, classifier_head
from latlab.encoders.builder import NetBuilder


def alexnet(b: NetBuilder) -> str:
    """AlexNet as in torchvision: the single-tower variant of "One weird trick" (Krizhevsky,
    2014) with 64-192-384-256-256 channels, no LRN, adaptive pooling to 6x6."""
    x = b.input
    for out, k, s, p, pool in (
        (64, 11, 4, 2, True),
        (192, 5, 1, 2, True),
        (384, 3, 1, 1, False),
        (256, 3, 1, 1, False),
        (256, 3, 1, 1, True),
    ):
        x = b.relu(b.conv(x, out, k, s, padding=p, bias=True))
        if pool:
            x = b.maxpool(x, 3, 2)
    x = adaptive_avgpool(b, x, 6)
    return classifier_head(b, x, (4096, 4096))


VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
    ),
}  # fmt: skip


def _vgg(config: str):
    def build(b: NetBuilder) -> str:
        """VGG (Simonyan & Zisserman, 2015), configuration A (11) or D (16), without BN."""
        x = b.input
        for v in VGG_CONFIGS[config]:
            if v == "M":
                x = b.maxpool(x, 2, 2)
            else:
                x = b.relu(b.conv(x, int(v), 3, padding=1, bias=True))
        x = adaptive_avgpool(b, x, 7)
        return classifier_head(b, x, (4096, 4096))

    return build


ALEXNET = ZooModel(
    "alexnet",
    "alexnet",
    alexnet,
    "Krizhevsky, One weird trick for parallelizing CNNs, arXiv:1404.5997 (2014)",
    min_resolution=63,
)
_VGG_PAPER = "Simonyan & Zisserman, Very deep convolutional networks, ICLR 2015"
VGG11 = ZooModel("vgg11", "vgg", _vgg("vgg11"), _VGG_PAPER)
VGG16 = ZooModel("vgg16", "vgg", _vgg("vgg16"), _VGG_PAPER)
