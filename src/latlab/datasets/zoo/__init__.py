"""Real architectures written with :class:`NetBuilder`: ``zoo:NAME[@N]`` references.

Generalisation to networks no search space generated is judged on these. Names follow
torchvision (``resnet50``, ``mobilenet_v3_small``, ``vit_b16``, ``swin_s``, ...), Hugging
Face (``bert_medium``, ``gpt2_medium``, ...) or the architecture's own repository
(``inception_v4`` as timm, ``yolov5s`` as Ultralytics, ``unet``). For image models ``@N`` is
the resolution: a model's default is its evaluation crop (224 for most; 288 for
EfficientNet-B2 and 380 for B4 as torchvision, 299 for Inception-v4, 640 for YOLOv5s, 256 for
U-Net), and ``@RES`` builds it for a square RES x RES input (a multiple of 32 for YOLOv5s, of
16 for U-Net, whose skip connections concatenate maps of several strides). For text models
(``inputs == "tokens"``) ``@N`` is the **sequence length**: the input is int64 token ids
``input_ids`` of shape (B, N) (``graph.input_dtype("input_ids") == "int64"``), and N is at
most the model's position table (``max_resolution``). Each graph's ``meta`` holds ``family``
(resnet, resnext, regnet, convnext, mobilenet, efficientnet, shufflenet, inception, densenet,
vgg, yolo, unet, vit, swin, bert, gpt, albert, llama, ...) for family splits, ``model``,
``resolution`` (the ``@N`` value), ``paper``, ``inputs`` and ``attention`` (True for attention
models, so experiments can select them).

Modules by family: ``classic`` (AlexNet, VGG), ``resnet`` (ResNet, ResNeXt), ``densenet``,
``regnet``, ``convnext`` (LayerNorm over channels, GELU), ``mobile`` (MobileNet V1-V3, MNASNet,
EfficientNet-B0/B2/B4, ShuffleNet V2), ``inception`` (GoogLeNet, Inception-v4, SqueezeNet),
``detection`` (YOLOv5s: C3/CSP blocks, SPPF, PAN neck with Resize and Concat, Detect head) and
``unet`` (ConvTranspose up-sampling, Concat skips).

MACs and parameters of every model agree with the published figures (torchvision, timm, the
papers, the reference implementations, Hugging Face model configurations) within the
tolerances of ``tests/test_zoo.py``, which names the source of each. MACs count Conv,
ConvTranspose, Gemm and MatMul multiply-accumulates, attention's two activation MatMuls
included; parameters count weights, biases, norm scale/shift and layer scales, each shared
tensor once.

Text models (``transformers``): ``bert_medium`` (8 layers, width 512, 8 heads; default
sequence 128), ``bert_large`` (64), ``albert_base`` (128), ``gpt2_medium`` (64, causal, no KV
cache), ``llama_8l512`` (128; RMSNorm, SwiGLU, rotary), ``t5_small_encoder`` (128).
Vision transformers (``vision_transformers``): ``vit_s16``, ``deit_s16``, ``vit_b16``,
``swin_s`` (224). Speech: ``whisper_tiny_encoder`` (float log-mel input (B, 80, N), ``@N``
frames, default 3000).
"""

from __future__ import annotations

import re
from typing import Any

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.zoo.common import ResolutionError, ZooModel
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError
from latlab.registry import Registry

MAX_RESOLUTION = 2048
_BODY = re.compile(r"(?P<name>[a-z0-9_]+)(?:@(?P<res>\d+))?")

__all__ = [
    "BUILTIN_MODELS",
    "MODELS",
    "ZooModel",
    "build_zoo",
    "get_model",
    "names",
    "parse_zoo",
    "register_model",
]

#: The built-in architectures: zoo name -> ``"module:attr"`` of its :class:`ZooModel`, imported
#: when the model is first built (listing the names imports none of the family modules). A new
#: architecture is a ``ZooModel`` constant in a family module plus one line here (outside
#: latlab: an entry point in the ``latlab.zoo`` group).
BUILTIN_MODELS: dict[str, str] = {
    "albert_base": "latlab.datasets.zoo.transformers:ALBERT_BASE",
    "alexnet": "latlab.datasets.zoo.classic:ALEXNET",
    "bert_large": "latlab.datasets.zoo.transformers:BERT_LARGE",
    "bert_medium": "latlab.datasets.zoo.transformers:BERT_MEDIUM",
    "convnext_small": "latlab.datasets.zoo.convnext:CONVNEXT_SMALL",
    "deit_s16": "latlab.datasets.zoo.vision_transformers:DEIT_S16",
    "densenet121": "latlab.datasets.zoo.densenet:DENSENET121",
    "densenet201": "latlab.datasets.zoo.densenet:DENSENET201",
    "efficientnet_b0": "latlab.datasets.zoo.mobile:EFFICIENTNET_B0",
    "efficientnet_b2": "latlab.datasets.zoo.mobile:EFFICIENTNET_B2",
    "efficientnet_b4": "latlab.datasets.zoo.mobile:EFFICIENTNET_B4",
    "googlenet": "latlab.datasets.zoo.inception:GOOGLENET",
    "gpt2_medium": "latlab.datasets.zoo.transformers:GPT2_MEDIUM",
    "inception_v4": "latlab.datasets.zoo.inception:INCEPTION_V4",
    "llama_8l512": "latlab.datasets.zoo.transformers:LLAMA_8L512",
    "mnasnet1_0": "latlab.datasets.zoo.mobile:MNASNET1_0",
    "mobilenet_v1": "latlab.datasets.zoo.mobile:MOBILENET_V1",
    "mobilenet_v2": "latlab.datasets.zoo.mobile:MOBILENET_V2",
    "mobilenet_v3_large": "latlab.datasets.zoo.mobile:MOBILENET_V3_LARGE",
    "mobilenet_v3_small": "latlab.datasets.zoo.mobile:MOBILENET_V3_SMALL",
    "regnet_y_1_6gf": "latlab.datasets.zoo.regnet:REGNET_Y_1_6GF",
    "resnet18": "latlab.datasets.zoo.resnet:RESNET18",
    "resnet34": "latlab.datasets.zoo.resnet:RESNET34",
    "resnet50": "latlab.datasets.zoo.resnet:RESNET50",
    "resnext101_32x8d": "latlab.datasets.zoo.resnet:RESNEXT101_32X8D",
    "shufflenet_v2_x1_0": "latlab.datasets.zoo.mobile:SHUFFLENET_V2_X1_0",
    "shufflenet_v2_x1_5": "latlab.datasets.zoo.mobile:SHUFFLENET_V2_X1_5",
    "squeezenet1_0": "latlab.datasets.zoo.inception:SQUEEZENET1_0",
    "squeezenet1_1": "latlab.datasets.zoo.inception:SQUEEZENET1_1",
    "swin_s": "latlab.datasets.zoo.vision_transformers:SWIN_S",
    "t5_small_encoder": "latlab.datasets.zoo.transformers:T5_SMALL_ENCODER",
    "unet": "latlab.datasets.zoo.unet:UNET",
    "vgg11": "latlab.datasets.zoo.classic:VGG11",
    "vgg16": "latlab.datasets.zoo.classic:VGG16",
    "vit_b16": "latlab.datasets.zoo.vision_transformers:VIT_B16",
    "vit_s16": "latlab.datasets.zoo.vision_transformers:VIT_S16",
    "whisper_tiny_encoder": "latlab.datasets.zoo.transformers:WHISPER_TINY_ENCODER",
    "yolov5s": "latlab.datasets.zoo.detection:YOLOV5S",
}

#: zoo name -> :class:`ZooModel` (lazy; plug-ins: the ``latlab.zoo`` entry points).
MODELS: Registry[ZooModel] = Registry(
    "zoo model",
    group="latlab.zoo",
    check=lambda obj: isinstance(obj, ZooModel),
    entries=BUILTIN_MODELS,
)


def register_model(model: ZooModel) -> None:
    """Make ``model`` buildable as ``zoo:NAME`` (one made at run time; built-ins are listed in
    :data:`BUILTIN_MODELS`)."""
    MODELS.register(model.name, model)


def names() -> list[str]:
    """Names of all zoo architectures, sorted."""
    return sorted(MODELS)


def get_model(name: str) -> ZooModel:
    """The zoo entry ``name``; raises naming it and the known names."""
    if name not in MODELS:
        raise NetworkReferenceError(
            f"unknown zoo model {name!r} in 'zoo:{name}' (known: {', '.join(names())})"
        )
    model = MODELS[name]
    if model.name != name:
        raise NetworkReferenceError(f"zoo entry {name!r} holds the model {model.name!r}")
    return model


def parse_zoo(body: str) -> tuple[str, int]:
    """``(name, resolution)`` of a ``zoo:`` reference body; raises naming the reference."""
    m = _BODY.fullmatch(body.strip())
    if m is None:
        raise NetworkReferenceError(
            f"malformed reference 'zoo:{body}': expected zoo:NAME or zoo:NAME@RESOLUTION"
        )
    model = get_model(m["name"])
    res = int(m["res"]) if m["res"] else model.resolution
    top = (
        model.max_resolution
        if model.inputs != "image"
        else min(model.max_resolution, MAX_RESOLUTION)
    )
    if not model.min_resolution <= res <= top:
        what, unit = {
            "tokens": ("sequence length", "tokens"),
            "mel": ("length", "frames"),
        }.get(model.inputs, ("resolution", "pixels"))
        raise NetworkReferenceError(
            f"bad {what} in 'zoo:{body}': {model.name} needs "
            f"{model.min_resolution}..{top} {unit}, got {res}"
        )
    if res % model.multiple_of:
        raise NetworkReferenceError(
            f"bad resolution in 'zoo:{body}': {model.name} needs a multiple of "
            f"{model.multiple_of} pixels, got {res}"
        )
    return model.name, res


def input_shape_of(model: ZooModel, resolution: int, batch: int = 1) -> tuple[int, ...]:
    """The input shape of ``model`` at ``@resolution``: (B, 3, R, R) or (B, S) token ids."""
    if model.inputs == "tokens":
        return (batch, resolution)
    if model.inputs == "mel":
        return (batch, 80, resolution)
    return (batch, 3, resolution, resolution)


def model_graph(
    model: ZooModel, reference: str, resolution: int, batch: int = 1, **meta: Any
) -> NetworkGraph:
    """The IR of ``model`` at ``resolution`` under ``reference``: its builder fed the input its
    kind takes (token ids, mel frames or images) and the model's metadata (plus ``meta``).
    Shared by the zoo and by networks kept out of it (:mod:`latlab.datasets.heldout`)."""
    info = {
        "family": model.family,
        "model": model.name,
        "resolution": resolution,
        "paper": model.paper,
        "inputs": model.inputs,
        "attention": model.attention,
        **meta,
    }
    shape = input_shape_of(model, resolution, batch)
    if model.inputs == "tokens":
        b = NetBuilder(reference, shape, input_name="input_ids", input_dtype="int64", meta=info)
    elif model.inputs == "mel":
        b = NetBuilder(reference, shape, input_name="input_features", meta=info)
    else:
        b = NetBuilder(reference, shape, meta=info)
    model.build(b)
    return b.build()


def build_zoo(name: str, resolution: int | None = None, batch: int = 1) -> NetworkGraph:
    """The IR of zoo model ``name`` at ``resolution`` (its default when None)."""
    model = get_model(name)
    res = model.resolution if resolution is None else int(resolution)
    body = name if resolution is None else f"{name}@{res}"
    parse_zoo(body)  # validates the resolution
    ref = f"zoo:{body}"
    try:
        graph = model_graph(model, ref, res, batch)
    except ResolutionError as exc:
        raise NetworkReferenceError(f"bad resolution in {ref!r}: {exc}") from None
    small = next((la for la in graph.layers if min(la.output_shape) < 1), None)
    if small is not None:
        raise NetworkReferenceError(
            f"bad resolution in {ref!r}: the feature map vanishes at layer {small.name!r}"
        )
    return graph


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    name, res = parse_zoo(body)
    expected = input_shape_of(get_model(name), res, opts.batch)
    if opts.input_shape is not None and tuple(opts.input_shape) != expected:
        raise NetworkReferenceError(
            f"reference 'zoo:{body}' fixes the input shape {expected}, got {opts.input_shape}"
        )
    graph = build_zoo(name, res if "@" in body else None, batch=opts.batch)
    return graph


#: The ``zoo:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "zoo",
    _resolve,
    validate=parse_zoo,
    help="real architecture NAME[@N] (N: resolution, or sequence length of text models; "
    "see `latlab.datasets.zoo.names()`)",
)
