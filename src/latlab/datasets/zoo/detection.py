"""YOLOv5s (Ultralytics YOLOv5 v6.0+ ``models/yolov5s.yaml``; Jocher et al., 2020-2022).

A one-stage detector: a CSP-Darknet backbone of C3 blocks (cross-stage partial bottlenecks),
SPPF (three chained 5x5 max pools, concatenated), a PAN neck (1x1 conv, nearest Resize x2,
Concat with the backbone map, C3; then stride-2 convs back down, Concat, C3) and a Detect
head: per level (strides 8, 16, 32) a 1x1 conv to 3 anchors x (5 + 80 classes), reshaped to
(N, 3, H, W, 85), sigmoid, and all levels concatenated to (N, boxes, 85) as the exported
model outputs them. The box decoding after that (grid offsets and anchor scales, a few
element-wise ops on the boxes' 4 coordinates) is not part of the graph.

Scaling: depth 0.33 (C3 repeats 3-6-9-3 -> 1-2-3-1), width 0.50 (channels 64..1024 -> 32..512).
Conv is Conv (no bias) + BN + SiLU with "same" padding, as in Ultralytics' ``Conv``.
"""

from __future__ import annotations

from latlab.datasets.zoo.common import ZooModel, conv_bn_act
from latlab.encoders.builder import NetBuilder

CLASSES = 80
ANCHORS = 3


def _conv(b: NetBuilder, x: str, out: int, k: int = 1, s: int = 1, p: int | None = None) -> str:
    return conv_bn_act(b, x, out, k, s, "silu", padding=p)


def _c3(b: NetBuilder, x: str, out: int, n: int, shortcut: bool = True) -> str:
    """C3: two 1x1 halves, one through ``n`` bottlenecks (1x1, 3x3, residual), Concat, 1x1."""
    hidden = out // 2
    y = _conv(b, x, hidden)
    for _ in range(n):
        z = _conv(b, _conv(b, y, hidden), hidden, 3)
        y = b.add(y, z) if shortcut else z
    return _conv(b, b.concat([y, _conv(b, x, hidden)]), out)


def _sppf(b: NetBuilder, x: str, out: int) -> str:
    y = _conv(b, x, b.shape(x)[1] // 2)
    pools = [y]
    for _ in range(3):
        pools.append(b.maxpool(pools[-1], 5, 1, padding=2))
    return _conv(b, b.concat(pools), out)


def _detect(b: NetBuilder, levels: list[str]) -> str:
    outs = []
    for x in levels:
        n, _, h, w = b.shape(x)
        y = b.conv(x, ANCHORS * (5 + CLASSES), 1, padding=0, bias=True)
        y = b.reshape(y, (n, ANCHORS, 5 + CLASSES, h, w))
        y = b.sigmoid(b.transpose(y, (0, 1, 3, 4, 2)))
        outs.append(b.reshape(y, (n, ANCHORS * h * w, 5 + CLASSES)))
    return b.concat(outs, axis=1)


def yolov5s(b: NetBuilder) -> str:
    """YOLOv5s v6.0: backbone, SPPF, PAN neck, Detect (80 COCO classes)."""
    x = _conv(b, b.input, 32, 6, 2, p=2)
    x = _conv(b, x, 64, 3, 2)
    x = _c3(b, x, 64, 1)
    x = _conv(b, x, 128, 3, 2)
    p3 = _c3(b, x, 128, 2)
    x = _conv(b, p3, 256, 3, 2)
    p4 = _c3(b, x, 256, 3)
    x = _conv(b, p4, 512, 3, 2)
    x = _sppf(b, _c3(b, x, 512, 1), 512)
    h10 = _conv(b, x, 256)
    x = _c3(b, b.concat([b.resize(h10, 2.0), p4]), 256, 1, shortcut=False)
    h14 = _conv(b, x, 128)
    small = _c3(b, b.concat([b.resize(h14, 2.0), p3]), 128, 1, shortcut=False)
    x = b.concat([_conv(b, small, 128, 3, 2), h14])
    medium = _c3(b, x, 256, 1, shortcut=False)
    x = b.concat([_conv(b, medium, 256, 3, 2), h10])
    large = _c3(b, x, 512, 1, shortcut=False)
    return _detect(b, [small, medium, large])


YOLOV5S = ZooModel(
    "yolov5s",
    "yolo",
    yolov5s,
    "Jocher et al., Ultralytics YOLOv5 v6.0 (2021), doi:10.5281/zenodo.3908559",
    resolution=640,
    min_resolution=64,
    multiple_of=32,
)
