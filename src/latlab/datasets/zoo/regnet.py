"""RegNet (Radosavovic et al., Designing network design spaces, CVPR 2020).

A RegNet is fixed by a handful of numbers: per-block widths follow the linear rule
``w_j = w_0 + w_a * j``, quantised to powers of ``w_m`` (rounded to multiples of 8), and
consecutive blocks of equal width form a stage. The widths are computed here exactly as
torchvision's ``BlockParams.from_init_params`` does (numpy's round is torch's: half to even).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from latlab.datasets.zoo.common import (
    ZooModel,
    conv_bn_act,
    make_divisible,
    pool_linear,
    squeeze_excitation,
)
from latlab.encoders.builder import NetBuilder


def regnet_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int
) -> list[tuple[int, int, int]]:
    """``(width, depth, group_width)`` per stage of a RegNet (bottleneck ratio 1)."""
    widths_cont = np.arange(depth) * w_a + w_0
    capacity = np.round(np.log(widths_cont / w_0) / math.log(w_m))
    widths = [int(v) for v in np.round(w_0 * np.power(w_m, capacity) / 8) * 8]
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)  # the group width cannot exceed the stage width
        out.append((make_divisible(w, g), d, g))
    return out


def regnet_builder(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int, se_ratio: float
) -> Callable[[NetBuilder], str]:
    """The builder of the RegNet these numbers fix (:func:`_regnet`), for other modules (the
    held-out set's RegNetX)."""
    return _regnet(depth, w_0, w_a, w_m, group_width, se_ratio)


def _regnet(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, se_ratio: float):
    def build(b: NetBuilder) -> str:
        """RegNet as in torchvision: 3x3/2 stem of 32 channels, stages of residual bottleneck
        blocks (1x1, grouped 3x3 with the stride, SE squeezing to ``se_ratio`` of the block's
        input width, 1x1; projection shortcut where the shape changes), global pool, FC."""
        x = conv_bn_act(b, b.input, 32, 3, 2)
        for width, n, g in regnet_stages(depth, w_0, w_a, w_m, group_width):
            for i in range(n):
                cin = b.shape(x)[1]
                stride = 2 if i == 0 else 1
                y = conv_bn_act(b, x, width, 1)
                y = conv_bn_act(b, y, width, 3, stride, groups=width // g)
                if se_ratio:
                    y = squeeze_excitation(b, y, round(se_ratio * cin), "relu", "sigmoid")
                y = conv_bn_act(b, y, width, 1, activation="none")
                shortcut = x
                if cin != width or stride != 1:
                    shortcut = conv_bn_act(b, x, width, 1, stride, activation="none")
                x = b.relu(b.add(y, shortcut))
        return pool_linear(b, x)

    return build


REGNET_Y_1_6GF = ZooModel(
    "regnet_y_1_6gf",
    "regnet",
    _regnet(27, 48, 20.71, 2.65, 24, 0.25),
    "Radosavovic et al., Designing network design spaces, CVPR 2020",
)
