"""Real architectures written with :class:`NetBuilder`: ``zoo:NAME[@RESOLUTION]`` references.

Generalisation to networks no search space generated is judged on these. Names follow
torchvision (``resnet50``, ``mobilenet_v3_small``, ``efficientnet_b0``, ...) or the
architecture's own repository (``inception_v4`` as timm, ``yolov5s`` as Ultralytics, ``unet``).
A model's default resolution is its evaluation crop (224 for most; 288 for EfficientNet-B2 and
380 for B4 as torchvision, 299 for Inception-v4, 640 for YOLOv5s, 256 for U-Net); ``@RES``
builds it for a square RES x RES input (a multiple of 32 for YOLOv5s, of 16 for U-Net, whose
skip connections concatenate maps of several strides). Each graph's ``meta`` holds ``family``
(resnet, resnext, regnet, convnext, mobilenet, efficientnet, shufflenet, inception, densenet,
vgg, yolo, unet, ...) for family splits, ``model``, ``resolution`` and ``paper``.

Modules by family: ``classic`` (AlexNet, VGG), ``resnet`` (ResNet, ResNeXt), ``densenet``,
``regnet``, ``convnext`` (LayerNorm over channels, GELU), ``mobile`` (MobileNet V1-V3, MNASNet,
EfficientNet-B0/B2/B4, ShuffleNet V2), ``inception`` (GoogLeNet, Inception-v4, SqueezeNet),
``detection`` (YOLOv5s: C3/CSP blocks, SPPF, PAN neck with Resize and Concat, Detect head) and
``unet`` (ConvTranspose up-sampling, Concat skips).

MACs and parameters of every model agree with the published figures (torchvision's, or the
paper's / reference implementation's where torchvision has none) within 2 %
(``tests/test_zoo.py`` names the source of each). MACs count Conv, ConvTranspose, Gemm and
MatMul multiply-accumulates; parameters count weights, biases, BatchNorm/LayerNorm scale and
shift and layer scales (as torchvision's ``num_params`` does).
"""

from __future__ import annotations

import re

from latlab.datasets.references import ResolveOptions, Scheme, register_scheme
from latlab.datasets.zoo import (  # noqa: F401  (registration)
    classic,
    convnext,
    densenet,
    detection,
    inception,
    mobile,
    regnet,
    resnet,
    unet,
)
from latlab.datasets.zoo.common import MODELS, ResolutionError, ZooModel
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

MAX_RESOLUTION = 2048
_BODY = re.compile(r"(?P<name>[a-z0-9_]+)(?:@(?P<res>\d+))?")

__all__ = ["MODELS", "ZooModel", "build_zoo", "get_model", "names", "parse_zoo"]


def names() -> list[str]:
    """Names of all zoo architectures, sorted."""
    return sorted(MODELS)


def get_model(name: str) -> ZooModel:
    """The zoo entry ``name``; raises naming it and the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise NetworkReferenceError(
            f"unknown zoo model {name!r} in 'zoo:{name}' (known: {', '.join(names())})"
        ) from None


def parse_zoo(body: str) -> tuple[str, int]:
    """``(name, resolution)`` of a ``zoo:`` reference body; raises naming the reference."""
    m = _BODY.fullmatch(body.strip())
    if m is None:
        raise NetworkReferenceError(
            f"malformed reference 'zoo:{body}': expected zoo:NAME or zoo:NAME@RESOLUTION"
        )
    model = get_model(m["name"])
    res = int(m["res"]) if m["res"] else model.resolution
    if not model.min_resolution <= res <= MAX_RESOLUTION:
        raise NetworkReferenceError(
            f"bad resolution in 'zoo:{body}': {model.name} needs "
            f"{model.min_resolution}..{MAX_RESOLUTION} pixels, got {res}"
        )
    if res % model.multiple_of:
        raise NetworkReferenceError(
            f"bad resolution in 'zoo:{body}': {model.name} needs a multiple of "
            f"{model.multiple_of} pixels, got {res}"
        )
    return model.name, res


def build_zoo(name: str, resolution: int | None = None, batch: int = 1) -> NetworkGraph:
    """The IR of zoo model ``name`` at ``resolution`` (its default when None)."""
    model = get_model(name)
    res = model.resolution if resolution is None else int(resolution)
    body = name if resolution is None else f"{name}@{res}"
    parse_zoo(body)  # validates the resolution
    ref = f"zoo:{body}"
    meta = {"family": model.family, "model": name, "resolution": res, "paper": model.paper}
    b = NetBuilder(ref, (batch, 3, res, res), meta=meta)
    try:
        model.build(b)
    except ResolutionError as exc:
        raise NetworkReferenceError(f"bad resolution in {ref!r}: {exc}") from None
    graph = b.build()
    small = next((la for la in graph.layers if min(la.output_shape) < 1), None)
    if small is not None:
        raise NetworkReferenceError(
            f"bad resolution in {ref!r}: the feature map vanishes at layer {small.name!r}"
        )
    return graph


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    name, res = parse_zoo(body)
    expected = (opts.batch, 3, res, res)
    if opts.input_shape is not None and tuple(opts.input_shape) != expected:
        raise NetworkReferenceError(
            f"reference 'zoo:{body}' fixes the input shape {expected}, got {opts.input_shape}"
        )
    graph = build_zoo(name, res if "@" in body else None, batch=opts.batch)
    return graph


register_scheme(
    Scheme(
        "zoo",
        _resolve,
        validate=parse_zoo,
        help="real architecture NAME[@RESOLUTION] (see `latlab.datasets.zoo.names()`)",
    )
)
