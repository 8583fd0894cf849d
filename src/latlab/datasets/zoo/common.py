"""The zoo's model record and the building blocks its architectures share.

Each architecture is a function that appends its layers to a :class:`NetBuilder` whose input
is (N, 3, R, R). The definitions follow torchvision's implementations of the papers (the
variants whose MACs and parameter counts torchvision publishes) or, for architectures
torchvision lacks, the reference implementation whose figures are published (timm's
Inception-v4, Ultralytics' YOLOv5s, the common U-Net), so that the golden tests can hold them
to published figures; deviations from the original papers are noted per model.
Dropout is an identity at inference and is not part of the graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from latlab.encoders.builder import NetBuilder
from latlab.errors import NetworkReferenceError


@dataclass(frozen=True, slots=True)
class ZooModel:
    """A real architecture: its name, family, default resolution and builder.

    ``inputs`` is ``"image"`` (input (N, 3, R, R), ``@R`` the resolution), ``"tokens"``
    (int64 token ids (N, S) named ``input_ids``, ``@S`` the sequence length) or ``"mel"``
    (a float log-mel spectrogram (N, 80, F) named ``input_features``, ``@F`` frames).
    ``max_resolution`` bounds ``@``: a text model's position table length. ``attention``
    marks attention models (``meta["attention"]``).
    """

    name: str
    family: str
    build: Callable[[NetBuilder], object]
    paper: str
    resolution: int = 224
    min_resolution: int = 32
    #: Resolutions must be a multiple of this (networks whose skip connections concatenate
    #: maps of several strides, such as YOLO's neck and U-Net, need every stride exact).
    multiple_of: int = 1
    inputs: str = "image"
    max_resolution: int = 2048
    attention: bool = False


class ResolutionError(NetworkReferenceError):
    """The requested resolution cannot be built by an architecture (raised while building)."""


# --------------------------------------------------------------------------- shared blocks


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Channels rounded to a multiple of ``divisor``, never 10 % below ``v`` (MobileNet code)."""
    min_value = min_value or divisor
    new = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def act(b: NetBuilder, x: str, name: str) -> str:
    """Activation by name: relu, relu6, hardswish, silu, or none."""
    if name == "relu":
        return b.relu(x)
    if name == "relu6":
        return b.relu6(x)
    if name == "hardswish":
        return b.hardswish(x)
    if name == "silu":
        return b.swish(x)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}")


def conv_bn_act(
    b: NetBuilder,
    x: str,
    out: int,
    kernel: int | Sequence[int] = 3,
    stride: int = 1,
    activation: str = "relu",
    groups: int = 1,
    padding: int | Sequence[int] | None = None,
) -> str:
    """Conv (no bias) + BatchNorm + activation, torchvision's ``Conv2dNormActivation``.

    ``kernel`` may be (kh, kw) (Inception's factorised 1x7/7x1 convolutions); the default
    padding keeps the size at stride 1, per axis.
    """
    pad: int | Sequence[int]
    if padding is not None:
        pad = padding
    elif isinstance(kernel, int):
        pad = (kernel - 1) // 2
    else:
        pad = tuple((k - 1) // 2 for k in kernel)
    y = b.conv(x, out, kernel, stride, padding=pad, groups=groups)
    return act(b, b.bn(y), activation)


def squeeze_excitation(
    b: NetBuilder, x: str, squeeze: int, activation: str = "relu", gate: str = "sigmoid"
) -> str:
    """torchvision's ``SqueezeExcitation``: pool, 1x1 conv, act, 1x1 conv, gate, scale."""
    c = b.shape(x)[1]
    s = b.global_avgpool(x)
    s = act(b, b.conv(s, squeeze, 1, padding=0, bias=True), activation)
    s = b.conv(s, c, 1, padding=0, bias=True)
    s = b.hardsigmoid(s) if gate == "hardsigmoid" else b.sigmoid(s)
    return b.mul(x, s)


def adaptive_avgpool(b: NetBuilder, x: str, size: int) -> str:
    """``AdaptiveAvgPool2d(size)`` on a square map, written as the fixed-window op it exports to.

    Exact cases: identity when the map already has ``size``; AveragePool (kernel = stride =
    map/size) when ``size`` divides the map; nearest up-sampling (adaptive pooling then copies
    each element) when the map divides ``size``. Otherwise adaptive pooling has windows of
    varying size, which ONNX cannot express (torch refuses to export it); the graph then uses
    the closest fixed window -- AveragePool with stride map//size and the kernel that yields
    ``size`` outputs, or nearest up-sampling -- same output shape and nearly the same cost.
    """
    _, _, h, w = b.shape(x)
    if h != w:
        raise ResolutionError(f"adaptive pooling of a non-square {h}x{w} map")
    if h == size:
        return x
    if h > size:
        stride = h // size
        return b.avgpool(x, h - (size - 1) * stride, stride)
    return b.resize(x, size / h, mode="nearest")


def classifier_head(b: NetBuilder, x: str, hidden: tuple[int, ...], classes: int = 1000) -> str:
    """Flatten, then Linear layers with ReLU between them (AlexNet/VGG heads)."""
    x = b.flatten(x)
    for h in hidden:
        x = b.relu(b.gemm(x, h))
    return b.gemm(x, classes)


def pool_linear(b: NetBuilder, x: str, classes: int = 1000, reduce_mean: bool = False) -> str:
    """Global average pooling (``GlobalAveragePool`` or ``x.mean([2, 3])``) and a classifier."""
    if reduce_mean:
        x = b.reduce_mean(x, (2, 3))
    else:
        x = b.flatten(b.global_avgpool(x))
    return b.gemm(x, classes)
