"""A held-out set of real architectures, kept out of the zoo and out of every design decision.

latlab's zoo (:mod:`latlab.datasets.zoo`) was looked at while the predictors were developed, so
its figures are no longer a clean test of "a network we have never seen". The networks here
were written after the predictors were finished, from their papers with the zoo's
:class:`NetBuilder` blocks, and are deliberately **not** registered as ``zoo:`` references:
``latlab compare`` never measures them and nothing tunes against them. Judge a predictor on
them last (``benchmarks/held_out_networks.py``) and change nothing in latlab because of what
they show.

Each network is exported by latlab's own ONNX exporter (:func:`export_onnx`) and measured and
predicted as a user's file, ``onnx:PATH`` (:func:`reference`), so the whole path a user takes
(ONNX file -> import -> measure -> predict) is exercised.

CNNs: ``efficientnet_v2_s`` (fused-MBConv), ``ghostnet_100`` (ghost modules), ``mixnet_s``
(mixed-kernel depthwise and split pointwise convolutions), ``regnet_x_400mf`` (RegNetX, no SE),
``wide_resnet50_2`` and ``convnext_tiny`` (LayerNorm and GELU in a CNN). Attention models:
``deit_tiny`` (ViT-Ti/16), ``mobilevit_s`` (convolution + transformer hybrid),
``distilbert_base`` (6 layers, width 768, sequence 128) and ``gpt2_small`` (12 layers, width
768, sequence 128, no KV cache). Parameter and MAC counts are checked against the published
figures in ``tests/test_heldout.py``.
"""

from __future__ import annotations

from pathlib import Path

from latlab.datasets.zoo import model_graph
from latlab.datasets.zoo.attention import mlp, self_attention
from latlab.datasets.zoo.common import (
    ResolutionError,
    ZooModel,
    act,
    conv_bn_act,
    make_divisible,
    pool_linear,
    squeeze_excitation,
)
from latlab.datasets.zoo.convnext import convnext_builder
from latlab.datasets.zoo.mobile import inverted_residual
from latlab.datasets.zoo.regnet import regnet_builder
from latlab.datasets.zoo.resnet import resnet_builder
from latlab.datasets.zoo.transformers import embed
from latlab.datasets.zoo.vision_transformers import vit_attention, vit_builder
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

__all__ = ["MODELS", "build", "export_onnx", "get_model", "names", "reference"]

# --------------------------------------------------------------------------- CNNs

#: EfficientNetV2-S as torchvision: (block, expansion, kernel, stride, in, out, layers).
_V2_S = (
    ("fused", 1, 3, 1, 24, 24, 2),
    ("fused", 4, 3, 2, 24, 48, 4),
    ("fused", 4, 3, 2, 48, 64, 4),
    ("mb", 4, 3, 2, 64, 128, 6),
    ("mb", 6, 3, 1, 128, 160, 9),
    ("mb", 6, 3, 2, 160, 256, 15),
)


def efficientnet_v2_s(b: NetBuilder) -> str:
    """EfficientNetV2-S (Tan & Le, ICML 2021, Table 4) as torchvision builds it: a 3x3/2 stem
    of 24, Fused-MBConv stages (one kxk convolution expanding, then a 1x1 projection; a single
    kxk convolution at expansion 1; no SE), MBConv stages with SE squeezing to a quarter of
    the block's input (SiLU, sigmoid gate), SiLU throughout, a 1x1 conv to 1280, pool, FC."""
    x = conv_bn_act(b, b.input, 24, 3, 2, "silu")
    for kind, e, k, s, _cin, out, n in _V2_S:
        for i in range(n):
            cin = b.shape(x)[1]
            stride = s if i == 0 else 1
            expanded = make_divisible(cin * e, 8)
            if kind == "mb":
                x = inverted_residual(
                    b, x, out, expanded, k, stride, "silu",
                    se_squeeze=max(1, cin // 4), se_activation="silu", se_gate="sigmoid",
                )  # fmt: skip
                continue
            if e == 1:
                y = conv_bn_act(b, x, out, k, stride, "silu")
            else:
                y = conv_bn_act(b, x, expanded, k, stride, "silu")
                y = conv_bn_act(b, y, out, 1, activation="none")
            x = b.add(x, y) if stride == 1 and cin == out else y
    x = conv_bn_act(b, x, 1280, 1, activation="silu")
    return pool_linear(b, x)


#: GhostNet 1.0 (Han et al., Table 1): (kernel, expanded, out, SE ratio, stride) per bottleneck.
_GHOST = (
    (3, 16, 16, 0, 1), (3, 48, 24, 0, 2), (3, 72, 24, 0, 1), (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1), (3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1), (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
)  # fmt: skip


def _ghost_module(b: NetBuilder, x: str, out: int, relu: bool) -> str:
    """Ghost module (ratio 2): a 1x1 primary convolution to half the outputs, a cheap 3x3
    depthwise convolution of those, both concatenated (every width here is even, so the
    reference code's ``[:, :out]`` slice keeps all channels and is left out)."""
    activation = "relu" if relu else "none"
    primary = conv_bn_act(b, x, out // 2, 1, activation=activation)
    cheap = conv_bn_act(b, primary, out // 2, 3, activation=activation, groups=out // 2)
    return b.concat([primary, cheap])


def ghostnet_100(b: NetBuilder) -> str:
    """GhostNet 1.0x (Han et al., GhostNet: more features from cheap operations, CVPR 2020):
    3x3/2 stem of 16, ghost bottlenecks (ghost module, a kxk depthwise convolution where the
    stride is 2, hard-sigmoid SE squeezing to a quarter rounded to 4, ghost module without
    ReLU; a depthwise + 1x1 shortcut where the shape changes), a 1x1 conv to 960, global pool,
    a 1x1 conv with bias to 1280 + ReLU, FC (the official code and timm's ``ghostnet_100``)."""
    x = conv_bn_act(b, b.input, 16, 3, 2)
    for k, mid, out, se, s in _GHOST:
        cin = b.shape(x)[1]
        y = _ghost_module(b, x, mid, relu=True)
        if s > 1:
            y = conv_bn_act(b, y, mid, k, s, "none", groups=mid)
        if se:
            y = squeeze_excitation(b, y, make_divisible(mid * se, 4), "relu", "hardsigmoid")
        y = _ghost_module(b, y, out, relu=False)
        shortcut = x
        if s != 1 or cin != out:
            shortcut = conv_bn_act(b, x, cin, k, s, "none", groups=cin)
            shortcut = conv_bn_act(b, shortcut, out, 1, activation="none")
        x = b.add(y, shortcut)
    x = conv_bn_act(b, x, 960, 1)
    x = b.relu(b.conv(b.global_avgpool(x), 1280, 1, padding=0, bias=True))
    return b.gemm(b.flatten(x), 1000)


def _split_channels(total: int, parts: int) -> list[int]:
    """MixNet's channel split: equal parts, the remainder to the first."""
    split = [total // parts] * parts
    split[0] += total - sum(split)
    return split


def _mixed_conv(
    b: NetBuilder,
    x: str,
    out: int,
    kernels: tuple[int, ...],
    stride: int = 1,
    depthwise: bool = False,
) -> str:
    """MixConv: the channels split into one group per kernel size, each convolved (depthwise,
    or a 1x1/kxk dense convolution of its split), concatenated; one kernel: a plain conv."""
    cin = b.shape(x)[1]
    if len(kernels) == 1:
        return b.conv(x, out, kernels[0], stride, groups=cin if depthwise else 1)
    ins, outs = _split_channels(cin, len(kernels)), _split_channels(out, len(kernels))
    parts = b.split(x, ins)
    ys = [
        b.conv(p, o, k, stride, groups=o if depthwise else 1)
        for p, o, k in zip(parts, outs, kernels, strict=True)
    ]
    return b.concat(ys)


#: MixNet-S (Tan & Le, BMVC 2019, Figure 8) as timm's ``mixnet_s`` arch definition:
#: (repeats, depthwise kernels, expansion kernels (groups), pointwise groups, stride,
#: expansion, out, SE ratio of the block input, activation).
_MIXNET_S = (
    (1, (3,), 1, 1, 1, 1, 16, 0.0, "relu"),
    (1, (3,), 2, 2, 2, 6, 24, 0.0, "relu"),
    (1, (3,), 2, 2, 1, 3, 24, 0.0, "relu"),
    (1, (3, 5, 7), 1, 1, 2, 6, 40, 0.5, "silu"),
    (3, (3, 5), 2, 2, 1, 6, 40, 0.5, "silu"),
    (1, (3, 5, 7), 1, 2, 2, 6, 80, 0.25, "silu"),
    (2, (3, 5), 1, 2, 1, 6, 80, 0.25, "silu"),
    (1, (3, 5, 7), 2, 2, 1, 6, 120, 0.5, "silu"),
    (2, (3, 5, 7, 9), 2, 2, 1, 3, 120, 0.5, "silu"),
    (1, (3, 5, 7, 9, 11), 1, 1, 2, 6, 200, 0.5, "silu"),
    (2, (3, 5, 7, 9), 1, 2, 1, 6, 200, 0.5, "silu"),
)


def mixnet_s(b: NetBuilder) -> str:
    """MixNet-S (Tan & Le, MixConv: mixed depthwise convolutional kernels, BMVC 2019): a 3x3/2
    stem of 16, a depthwise-separable block, then inverted residuals whose depthwise
    convolution mixes kernel sizes over channel groups and whose 1x1 expansion/projection may
    be split into 2 groups, SE squeezing to ``ratio`` x the block input (block activation,
    sigmoid gate), ReLU in the first stages and swish later, a 1x1 conv to 1536, pool, FC."""
    x = conv_bn_act(b, b.input, 16, 3, 2)
    first = True
    for n, dw, exp_groups, pw_groups, s, e, out, se, activation in _MIXNET_S:
        for i in range(n):
            cin = b.shape(x)[1]
            stride = s if i == 0 else 1
            if first:  # depthwise-separable: dw, BN, act, pw, BN
                y = conv_bn_act(b, x, cin, dw[0], stride, activation, groups=cin)
                y = conv_bn_act(b, y, out, 1, activation="none")
                first = False
            else:
                mid = make_divisible(cin * e, 8)
                y = act(b, b.bn(_mixed_conv(b, x, mid, (1,) * exp_groups)), activation)
                y = act(b, b.bn(_mixed_conv(b, y, mid, dw, stride, depthwise=True)), activation)
                if se:
                    y = squeeze_excitation(b, y, round(cin * se), activation, "sigmoid")
                y = b.bn(_mixed_conv(b, y, out, (1,) * pw_groups))
            x = b.add(x, y) if stride == 1 and cin == out else y
    x = conv_bn_act(b, x, 1536, 1)
    return pool_linear(b, x)


# --------------------------------------------------------------------------- attention models


def _unfold(b: NetBuilder, x: str, patch: int) -> str:
    """MobileViT's unfold as timm writes it: (B, C, H, W) -> (B·P, N, C), P = patch², N the
    number of patches."""
    bs, c, h, w = b.shape(x)
    nh, nw = h // patch, w // patch
    y = b.transpose(b.reshape(x, (bs * c * nh, patch, nw, patch)), (0, 2, 1, 3))
    y = b.transpose(b.reshape(y, (bs, c, nh * nw, patch * patch)), (0, 3, 2, 1))
    return b.reshape(y, (bs * patch * patch, nh * nw, c))


def _fold(b: NetBuilder, x: str, shape: tuple[int, ...], patch: int) -> str:
    """The inverse of :func:`_unfold`, back to ``shape`` (B, C, H, W)."""
    bs, c, h, w = shape
    nh, nw = h // patch, w // patch
    y = b.transpose(b.reshape(x, (bs, patch * patch, nh * nw, c)), (0, 3, 2, 1))
    y = b.transpose(b.reshape(y, (bs * c * nh, nw, patch, patch)), (0, 2, 1, 3))
    return b.reshape(y, (bs, c, h, w))


def _mobilevit_block(b: NetBuilder, x: str, dim: int, depth: int, patch: int = 2) -> str:
    """MobileViT block: 3x3 conv + 1x1 conv to ``dim`` (no norm), unfold into patches,
    ``depth`` pre-LN transformer layers (4 heads, FFN 2·dim, SiLU), LN, fold, 1x1 conv back
    to C, concat with the block input and a 3x3 fusion conv."""
    shape = b.shape(x)
    c = shape[1]
    y = conv_bn_act(b, x, c, 3, activation="silu")
    y = b.conv(y, dim, 1, padding=0)
    tokens = _unfold(b, y, patch)
    for _ in range(depth):
        tokens = b.add(tokens, vit_attention(b, b.layernorm(tokens), 4))
        h = b.swish(b.linear(b.layernorm(tokens), 2 * dim))
        tokens = b.add(tokens, b.linear(h, dim))
    y = _fold(b, b.layernorm(tokens), (shape[0], dim, shape[2], shape[3]), patch)
    y = conv_bn_act(b, y, c, 1, activation="silu")
    return conv_bn_act(b, b.concat([x, y]), c, 3, activation="silu")


def mobilevit_s(b: NetBuilder) -> str:
    """MobileViT-S (Mehta & Rastegari, ICLR 2022, Table 4; timm's ``mobilevit_s``): 3x3/2 stem
    of 16, MobileNetV2 blocks (expansion 4, SiLU), three stride-2 MV2 + MobileViT stages of
    96/128/160 channels with transformer widths 144/192/240 and depths 2/4/3 (2x2 patches),
    a 1x1 conv to 640, pool, FC. Default input 256 x 256."""
    _, _, h, w = b.shape(b.input)
    if h % 64 or w % 64:
        raise ResolutionError(f"MobileViT needs a multiple of 64 pixels, got {h}x{w}")
    x = conv_bn_act(b, b.input, 16, 3, 2, "silu")

    def mv2(x: str, out: int, stride: int) -> str:
        return inverted_residual(b, x, out, 4 * b.shape(x)[1], 3, stride, "silu")

    x = mv2(x, 32, 1)
    for i in range(3):
        x = mv2(x, 64, 2 if i == 0 else 1)
    for out, dim, depth in ((96, 144, 2), (128, 192, 4), (160, 240, 3)):
        x = _mobilevit_block(b, mv2(x, out, 2), dim, depth)
    x = conv_bn_act(b, x, 640, 1, activation="silu")
    return pool_linear(b, x)


def distilbert_base(b: NetBuilder) -> str:
    """DistilBERT base (Sanh et al., 2019): BERT-base's width (768, 12 heads, FFN 3072, GELU)
    with 6 post-LN layers, word + learned position embeddings (no token types), embedding LN,
    queries scaled by 1/√head_dim before Q·Kᵀ (Hugging Face ``DistilBertModel``), no pooler:
    the output is the last hidden states."""
    x = b.layernorm(embed(b, 30522, 768, 512), 1e-12)
    for _ in range(6):
        x = b.layernorm(b.add(x, self_attention(b, x, 12, scale="q")), 1e-12)
        x = b.layernorm(b.add(x, mlp(b, x, 3072)), 1e-12)
    return x


def gpt2_small(b: NetBuilder) -> str:
    """GPT-2 small (Radford et al., 2019): 12 pre-LN layers, width 768, 12 heads, fused QKV,
    causal mask, ``gelu_new`` FFN 3072, final LN, LM head tied to the token embedding
    (vocabulary 50,257; 1,024 positions); no KV cache (every position's logits)."""
    dim = 768
    x = embed(b, 50257, dim, 1024)
    for _ in range(12):
        x = b.add(x, self_attention(b, b.layernorm(x), 12, fused_qkv=True, mask=True))
        x = b.add(x, mlp(b, b.layernorm(x), 4 * dim, act="gelu_tanh"))
    x = b.layernorm(x)
    return b.add_layer("MatMul", [x], {"stored_params": 0}, [(dim, 50257)])[0]


# --------------------------------------------------------------------------- registry

_TEXT = {"min_resolution": 1, "inputs": "tokens", "attention": True}

#: The held-out networks by name (a private registry: never ``zoo:`` references).
MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "efficientnet_v2_s",
            "efficientnetv2",
            efficientnet_v2_s,
            "Tan & Le, EfficientNetV2: smaller models and faster training, ICML 2021",
            resolution=384,
        ),
        ZooModel(
            "ghostnet_100",
            "ghostnet",
            ghostnet_100,
            "Han et al., GhostNet: more features from cheap operations, CVPR 2020",
        ),
        ZooModel(
            "mixnet_s",
            "mixnet",
            mixnet_s,
            "Tan & Le, MixConv: mixed depthwise convolutional kernels, BMVC 2019",
        ),
        ZooModel(
            "regnet_x_400mf",
            "regnetx",
            regnet_builder(22, 24, 24.48, 2.54, 16, 0.0),
            "Radosavovic et al., Designing network design spaces, CVPR 2020",
        ),
        ZooModel(
            "wide_resnet50_2",
            "wide_resnet",
            resnet_builder((3, 4, 6, 3), True, width_per_group=128),
            "Zagoruyko & Komodakis, Wide residual networks, BMVC 2016",
        ),
        ZooModel(
            "convnext_tiny",
            "convnext",
            convnext_builder((3, 3, 9, 3), (96, 192, 384, 768)),
            "Liu et al., A ConvNet for the 2020s, CVPR 2022",
        ),
        ZooModel(
            "deit_tiny",
            "deit",
            vit_builder(192, 12, 3),
            "Touvron et al., Training data-efficient image transformers, ICML 2021",
            attention=True,
        ),
        ZooModel(
            "mobilevit_s",
            "mobilevit",
            mobilevit_s,
            "Mehta & Rastegari, MobileViT: light-weight, general-purpose vision transformer, "
            "ICLR 2022",
            resolution=256,
            min_resolution=64,
            multiple_of=64,
            attention=True,
        ),
        ZooModel(
            "distilbert_base",
            "distilbert",
            distilbert_base,
            "Sanh et al., DistilBERT, a distilled version of BERT, 2019",
            resolution=128,
            max_resolution=512,
            **_TEXT,  # type: ignore[arg-type]
        ),
        ZooModel(
            "gpt2_small",
            "gpt",
            gpt2_small,
            "Radford et al., Language models are unsupervised multitask learners, 2019",
            resolution=128,
            max_resolution=1024,
            **_TEXT,  # type: ignore[arg-type]
        ),
    )
}


def names() -> list[str]:
    """Names of the held-out networks, sorted."""
    return sorted(MODELS)


def get_model(name: str) -> ZooModel:
    """The held-out entry ``name``; raises naming it and the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise NetworkReferenceError(
            f"unknown held-out network {name!r} (known: {', '.join(names())})"
        ) from None


def build(name: str, batch: int = 1) -> NetworkGraph:
    """The IR of held-out network ``name`` at its default input (resolution or sequence)."""
    model = get_model(name)
    return model_graph(model, f"heldout:{name}", model.resolution, batch, held_out=True)


def export_onnx(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write ``FOLDER/NAME.onnx`` (latlab's exporter, seeded random weights) atomically and
    return its path; an existing file is kept (the export is deterministic)."""
    from latlab.encoders.onnx_export import to_onnx
    from latlab.fileio import atomic_write_bytes

    path = Path(folder) / f"{name}.onnx"
    if not path.is_file():
        model = to_onnx(build(name), seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model.SerializeToString())
    return path


def reference(name: str, folder: str | Path) -> str:
    """The ``onnx:PATH`` reference of held-out network ``name`` (exported into ``folder``)."""
    return f"onnx:{export_onnx(name, folder).resolve()}"
