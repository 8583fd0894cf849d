"""The zoo of real architectures: golden MACs/parameters, references, ONNX export and runs."""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets import parse_reference, resolve, zoo
from latlab.datasets.measure import MeasureConfig, measure
from latlab.errors import NetworkReferenceError
from ort_helpers import run_ort

# Published figures (GMACs, parameters) at each model's default resolution (224 unless
# RESOLUTION says otherwise). torchvision's model metadata (``Weights.meta["_ops"]`` in GFLOPS,
# which torchvision counts as multiply-accumulates, and ``meta["num_params"]``), shown in the
# "Table of all available classification weights" of https://pytorch.org/vision/stable/models.html
# (torchvision 0.15+; IMAGENET1K_V1 weights), unless SOURCES names another.
PUBLISHED: dict[str, tuple[float, int]] = {
    "alexnet": (0.714, 61_100_840),
    "vgg11": (7.609, 132_863_336),
    "vgg16": (15.47, 138_357_544),
    "googlenet": (1.498, 6_624_904),
    "resnet18": (1.814, 11_689_512),
    "resnet34": (3.664, 21_797_672),
    "resnet50": (4.089, 25_557_032),
    "resnext101_32x8d": (16.414, 88_791_336),
    "regnet_y_1_6gf": (1.612, 11_202_430),
    "convnext_small": (8.684, 50_223_688),
    "densenet121": (2.834, 7_978_856),
    "densenet201": (4.291, 20_013_928),
    "squeezenet1_0": (0.819, 1_248_424),
    "squeezenet1_1": (0.349, 1_235_496),
    "shufflenet_v2_x1_0": (0.145, 2_278_604),
    "shufflenet_v2_x1_5": (0.296, 3_503_624),
    "mobilenet_v1": (0.569, 4_200_000),
    "mobilenet_v2": (0.301, 3_504_872),
    "mobilenet_v3_small": (0.057, 2_542_856),
    "mobilenet_v3_large": (0.217, 5_483_032),
    "mnasnet1_0": (0.314, 4_383_312),
    "efficientnet_b0": (0.386, 5_288_548),
    "efficientnet_b2": (1.088, 9_109_994),  # at 288 px, torchvision's crop (the paper: 260)
    "efficientnet_b4": (4.394, 19_341_616),  # at 380 px
    "inception_v4": (12.3, 42_700_000),
    "yolov5s": (16.5 / 2, 7_200_000),
}
# Where the figures are not torchvision's, and the tolerance they allow (relative; 2 % by
# default). Figures published to 2-3 significant digits get 1 % (their rounding error).
SOURCES: dict[str, tuple[str, float]] = {
    "mobilenet_v1": ("Howard et al. 2017, Table 8: 569 M mult-adds, 4.2 M parameters", 0.01),
    "inception_v4": ("timm model card inception_v4.tf_in1k: 42.7 M params, 12.3 GMACs", 0.01),
    # Ultralytics' FLOPs are 2 x the MACs thop counts.
    "yolov5s": ("Ultralytics YOLOv5 README (v6.0+): 7.2 M params, 16.5 GFLOPs @640", 0.01),
}
RESOLUTION = {"efficientnet_b2": 288, "efficientnet_b4": 380, "inception_v4": 299, "yolov5s": 640}

FAMILIES = {
    "alexnet": "alexnet",
    "vgg11": "vgg",
    "vgg16": "vgg",
    "googlenet": "googlenet",
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "resnext101_32x8d": "resnext",
    "regnet_y_1_6gf": "regnet",
    "convnext_small": "convnext",
    "densenet121": "densenet",
    "densenet201": "densenet",
    "squeezenet1_0": "squeezenet",
    "squeezenet1_1": "squeezenet",
    "shufflenet_v2_x1_0": "shufflenet",
    "shufflenet_v2_x1_5": "shufflenet",
    "mobilenet_v1": "mobilenet",
    "mobilenet_v2": "mobilenet",
    "mobilenet_v3_small": "mobilenet",
    "mobilenet_v3_large": "mobilenet",
    "mnasnet1_0": "mnasnet",
    "efficientnet_b0": "efficientnet",
    "efficientnet_b2": "efficientnet",
    "efficientnet_b4": "efficientnet",
    "inception_v4": "inception",
    "yolov5s": "yolo",
    "unet": "unet",
}

# Slow to export and load (61-138 M parameters): exported and run in the slow tests only.
HEAVY = {"alexnet", "vgg11", "vgg16", "resnext101_32x8d"}
# Networks whose output is not a 1000-class vector, with a small resolution they accept.
DENSE = {"yolov5s": 64, "unet": 32}

# Attention models: (parameters, MACs, relative tolerance of the MACs, source). Parameters are
# exact where the reference implementation's count is published to the unit (each shared
# tensor counted once); MACs include attention's two activation MatMuls. Text models at their
# default sequence length (@N = tokens): their MACs are the closed-form count of the reference
# implementation (no paper publishes them at these lengths), see ``text_macs``.
ATTENTION: dict[str, tuple[int, float, float, str]] = {
    # timm vit_small_patch16_224 (22.05 M); DeiT paper (Touvron et al. 2021, Table 1):
    # DeiT-S 22 M parameters, 4.6 G "FLOPs" (multiply-accumulates)
    "vit_s16": (22_050_664, 4.6e9, 0.01, "timm model card; DeiT paper Table 1"),
    "deit_s16": (22_050_664, 4.6e9, 0.01, "DeiT paper Table 1 (DeiT-S = ViT-S shape)"),
    # torchvision ViT_B_16_Weights.IMAGENET1K_V1: num_params, _ops 17.564 GFLOPS (MACs)
    "vit_b16": (86_567_656, 17.564e9, 0.001, "torchvision model table"),
    # torchvision Swin_S_Weights.IMAGENET1K_V1: num_params, _ops 8.741 GFLOPS; paper 50 M/8.7 G
    "swin_s": (49_606_258, 8.741e9, 0.001, "torchvision model table; Swin paper Table 1"),
    # Hugging Face num_parameters() of the reference configurations (BertModel with pooler,
    # AlbertModel, GPT2LMHeadModel with tied head, T5EncoderModel); papers: BERT-large 340 M,
    # ALBERT-base 12 M, GPT-2 medium 345 M, BERT-medium 41.4 M (model card)
    "bert_medium": (41_373_184, 0.0, 0.0, "HF BertModel(L=8, H=512, A=8)"),
    "bert_large": (335_141_888, 0.0, 0.0, "HF bert-large-uncased"),
    "albert_base": (11_683_584, 0.0, 0.0, "HF albert-base-v2"),
    "gpt2_medium": (354_823_168, 0.0, 0.0, "HF gpt2-medium"),
    "t5_small_encoder": (35_330_816, 0.0, 0.0, "HF T5EncoderModel t5-small"),
    # HF openai/whisper-tiny: 37,760,640 in all = this encoder + the decoder's 29,552,256
    "whisper_tiny_encoder": (8_208_384, 0.0, 0.0, "HF WhisperModel tiny (encoder part)"),
    # HF LlamaForCausalLM closed form: 2·V·D + L·(4·D² + 3·D·F + 2·D) + D (no published model)
    "llama_8l512": (
        2 * 32000 * 512 + 8 * (4 * 512**2 + 3 * 512 * 1536 + 2 * 512) + 512,
        0.0,
        0.0,
        "HF LlamaForCausalLM formula",
    ),
}

ATTENTION_FAMILIES = {
    "vit_s16": "vit",
    "deit_s16": "deit",
    "vit_b16": "vit",
    "swin_s": "swin",
    "bert_medium": "bert",
    "bert_large": "bert",
    "albert_base": "albert",
    "gpt2_medium": "gpt",
    "t5_small_encoder": "t5",
    "llama_8l512": "llama",
    "whisper_tiny_encoder": "whisper",
}


def text_macs(name: str, s: int) -> int:
    """Closed-form MACs of the text models at sequence length ``s``: per layer the
    projections and FFN (S·(4·D² + 2·D·F), SwiGLU 3·D·F) plus Q·Kᵀ and P·V (2·S²·D)."""

    def layers(n: int, d: int, f: int, ffn_mats: int = 2, tokens: int = s) -> int:
        return n * (tokens * (4 * d * d + ffn_mats * d * f) + 2 * tokens * tokens * d)

    if name == "whisper_tiny_encoder":  # s = mel frames; conv k3 front end halves them
        return s * 384 * 80 * 3 + (s // 2) * 384 * 384 * 3 + layers(4, 384, 1536, tokens=s // 2)

    return {
        "bert_medium": layers(8, 512, 2048) + 512 * 512,  # + pooler
        "bert_large": layers(24, 1024, 4096) + 1024 * 1024,
        "albert_base": s * 128 * 768 + layers(12, 768, 3072) + 768 * 768,
        "gpt2_medium": layers(24, 1024, 4096) + s * 1024 * 50257,  # + LM head
        "llama_8l512": layers(8, 512, 1536, 3) + s * 512 * 32000,
        "t5_small_encoder": layers(6, 512, 2048),
    }[name]


def test_names_cover_the_required_architectures():
    assert set(zoo.names()) == set(FAMILIES) | set(ATTENTION)
    assert zoo.names() == sorted(zoo.names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macs_and_params_match_published_figures(name):
    gmacs, params = PUBLISHED[name]
    tol = SOURCES.get(name, ("torchvision", 0.02))[1]
    res = RESOLUTION.get(name, 224)
    g = resolve(f"zoo:{name}")
    assert g.inputs["input"] == (1, 3, res, res)
    assert g.totals.macs == pytest.approx(gmacs * 1e9, rel=tol)
    assert g.totals.params == pytest.approx(params, rel=tol)
    assert g.family == FAMILIES[name]
    assert g.meta["model"] == name and g.meta["resolution"] == res
    assert not g.unknown_ops


def test_resolution_changes_input_and_cost():
    small = resolve("zoo:resnet50@160")
    default = resolve("zoo:resnet50")
    assert small.inputs["input"] == (1, 3, 160, 160)
    assert small.reference == "zoo:resnet50@160"
    assert small.totals.params == default.totals.params
    # conv MACs scale with the spatial area (the FC layer does not)
    fc = 2048 * 1000
    scaled = (default.totals.macs - fc) * (160 / 224) ** 2
    assert small.totals.macs - fc == pytest.approx(scaled, rel=0.02)
    assert resolve("zoo:resnet50@224").digest == default.digest
    assert resolve("zoo:mobilenet_v2", batch=4).inputs["input"] == (4, 3, 224, 224)


@pytest.mark.parametrize(
    ("ref", "culprit"),
    [
        ("zoo:resnet51", "resnet51"),
        ("zoo:ResNet50", "ResNet50"),
        ("zoo:resnet50@abc", "resnet50@abc"),
        ("zoo:resnet50@16", "resnet50@16"),
        ("zoo:alexnet@48", "alexnet@48"),
        ("zoo:vgg16@4096", "vgg16@4096"),
        ("zoo:resnet50@", "resnet50@"),
    ],
)
def test_bad_references_name_the_culprit(ref, culprit):
    with pytest.raises(NetworkReferenceError, match=culprit):
        parse_reference(ref)


def test_input_shape_must_agree_with_reference():
    with pytest.raises(NetworkReferenceError, match="zoo:resnet18"):
        resolve("zoo:resnet18", input_shape=(1, 3, 128, 128))


@pytest.mark.parametrize("name", sorted(set(PUBLISHED) - HEAVY - set(DENSE)))
def test_exports_and_runs_at_an_odd_resolution(name):
    # 97 px exercises floor/ceil rounding of every stride and pool against ONNX's rules.
    g = resolve(f"zoo:{name}@97")
    out = run_ort(g, check_shapes=True)
    assert out.shape == g.layers[-1].output_shape == (1, 1000)
    assert np.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_heavy_models_export_and_run(name):
    g = resolve(f"zoo:{name}")
    out = run_ort(g, check_shapes=True)
    assert out.shape == g.layers[-1].output_shape == (1, 1000)


def test_adaptive_pooling_cases():
    # VGG at 32 px: 1x1 map up-sampled to 7x7; at 448: 14x14 pooled 2x2; at 256: approximate.
    for res, op in ((32, "Resize"), (448, "AveragePool"), (256, "AveragePool")):
        g = resolve(f"zoo:vgg11@{res}")
        before_fc = g.layers[[la.op for la in g.layers].index("Flatten") - 1]
        assert before_fc.op == op and before_fc.output_shape == (1, 512, 7, 7)
    assert all(la.op != "Resize" for la in resolve("zoo:vgg11").layers)


def _unet_counts(res: int) -> tuple[int, int]:
    """(MACs, params) of the 64-channel, 2-class U-Net by hand: double 3x3 conv + BN per
    level, 2x2/2 transposed convs halving the channels, a 1x1 conv with bias at the end."""
    chans = (64, 128, 256, 512, 1024)
    macs = params = 0

    def double(cin: int, c: int, size: int) -> None:
        nonlocal macs, params
        macs += size * size * 9 * (cin * c + c * c)
        params += 9 * (cin * c + c * c) + 4 * c  # two convs, two BN (scale, shift)

    for level, c in enumerate(chans):
        double(3 if level == 0 else chans[level - 1], c, res >> level)
    for level in (3, 2, 1, 0):
        c, size = chans[level], res >> level
        macs += 2 * c * (size // 2) ** 2 * c * 4  # ConvTranspose: input elements x C_out x 2x2
        params += 2 * c * c * 4 + c
        double(2 * c, c, size)
    macs += res * res * 64 * 2
    params += 64 * 2 + 2
    return macs, params


def test_unet_counts_and_layout():
    # ~31 M parameters is the figure quoted for the 64-channel U-Net of the common
    # implementations (milesial/Pytorch-UNet with transposed convolutions); exact counts here
    # follow from its definition, which also checks ConvTranspose's cost rule.
    g = resolve("zoo:unet")
    macs, params = _unet_counts(256)
    assert (g.totals.macs, g.totals.params) == (macs, params)
    assert g.totals.params == pytest.approx(31.0e6, rel=0.01)
    assert g.inputs["input"] == (1, 3, 256, 256) and g.layers[-1].output_shape == (1, 2, 256, 256)
    assert g.family == "unet"
    ops = [la.op for la in g.layers]
    assert ops.count("ConvTranspose") == 4 and ops.count("Concat") == 4
    assert resolve("zoo:unet@128").totals.macs == _unet_counts(128)[0]


def test_yolo_layout():
    g = resolve("zoo:yolov5s@320")
    ops = [la.op for la in g.layers]
    assert ops.count("Resize") == 2 and ops.count("MaxPool") == 3  # neck up-sampling, SPPF
    # three levels (strides 8, 16, 32) x 3 anchors x (4 box + 1 objectness + 80 classes)
    boxes = 3 * sum((320 // s) ** 2 for s in (8, 16, 32))
    assert g.layers[-1].output_shape == (1, boxes, 85)
    # conv MACs scale with the area (no FC layer)
    assert g.totals.macs == pytest.approx(resolve("zoo:yolov5s").totals.macs / 4, rel=1e-9)


@pytest.mark.parametrize(
    ("ref", "culprit"),
    [("zoo:yolov5s@100", "multiple of 32"), ("zoo:unet@40", "multiple of 16")],
)
def test_resolutions_the_skips_cannot_align_are_refused(ref, culprit):
    with pytest.raises(NetworkReferenceError, match=culprit):
        parse_reference(ref)


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_prediction_models_export_and_run(name):
    g = resolve(f"zoo:{name}@{DENSE[name]}")
    out = run_ort(g, check_shapes=True)
    assert out.shape == g.layers[-1].output_shape
    assert np.isfinite(out).all()


@pytest.mark.parametrize("ref", ["zoo:convnext_small@32", "zoo:yolov5s@64", "zoo:unet@32"])
def test_new_families_measure_in_onnxruntime(ref):
    # ConvNeXt brings LayerNormalization and Gelu (exported at opset 20), YOLO Resize and
    # Concat, U-Net ConvTranspose: each runs through latlab's measurement protocol.
    cfg = MeasureConfig(repeats=3, min_repeats=2, time_budget_s=0.5, max_warmup_s=0.5)
    m = measure(ref, cfg)
    assert m.network == ref
    assert 0 < m.median_ms < 1000


# --------------------------------------------------------------------------- attention models


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_models_match_published_counts(name):
    params, macs, tol, _source = ATTENTION[name]
    g = resolve(f"zoo:{name}")
    assert g.totals.params == params
    model = zoo.get_model(name)
    expected = macs or text_macs(name, model.resolution)
    assert g.totals.macs == pytest.approx(expected, rel=tol or 1e-12)
    assert g.family == ATTENTION_FAMILIES[name]
    assert g.meta["attention"] is True and g.meta["resolution"] == model.resolution
    assert not g.unknown_ops
    kinds = {la.kind for la in g.layers}
    assert {"fc", "softmax"} <= kinds
    assert "norm" in kinds or g.family in ("llama", "t5")  # RMSNorm is primitive ops
    # both operands activations: attention's batched MatMuls
    assert any(la.op == "MatMul" and len(la.inputs) == 2 for la in g.layers)


def test_cnns_are_not_attention_models():
    g = resolve("zoo:resnet18@64")
    assert g.meta["attention"] is False and g.meta["inputs"] == "image"


def test_text_models_take_int64_token_ids_and_at_n_is_the_sequence_length():
    g = resolve("zoo:bert_medium@32")
    assert g.inputs == {"input_ids": (1, 32)} and g.input_dtype("input_ids") == "int64"
    assert g.meta["inputs"] == "tokens" and g.meta["resolution"] == 32
    assert g.layers[0].op == "Gather" and g.layers[0].attrs["vocab"] == 30522
    assert g.totals.macs == text_macs("bert_medium", 32)
    assert resolve("zoo:bert_medium@32", batch=2).inputs == {"input_ids": (2, 32)}
    # the position table bounds the sequence; Swin and ViT need fitting resolutions
    for ref, culprit in (
        ("zoo:bert_medium@513", "sequence length"),
        ("zoo:gpt2_medium@0", "sequence length"),
        ("zoo:swin_s@256", "swin_s@256"),
        ("zoo:vit_s16@100", "vit_s16@100"),
    ):
        with pytest.raises(NetworkReferenceError, match=culprit):
            resolve(ref)
    with pytest.raises(NetworkReferenceError, match="bert_medium"):
        resolve("zoo:bert_medium", input_shape=(1, 3, 224, 224))


def test_text_model_exports_an_int64_input_and_valid_token_ids():
    import onnx

    from latlab.datasets.measure.inputs import graph_inputs, model_inputs
    from latlab.encoders.onnx_export import to_onnx

    g = resolve("zoo:albert_base@16")
    m = to_onnx(g)
    (inp,) = m.graph.input
    assert inp.name == "input_ids" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    ids = model_inputs(m, 1)["input_ids"]
    assert ids.dtype == np.int64 and ids.max() < 30000 and ids.max() > 1000
    assert np.array_equal(graph_inputs(g)["input_ids"], ids)
    # ALBERT's shared layer is exported once: the initializers hold the parameters once
    # (plus BN-free constants: the position/type rows and scalars)
    stored = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    assert stored == pytest.approx(g.totals.params, rel=0.01)
    assert stored < 1.5 * g.totals.params  # twelve copies of the layer would be ~7x


@pytest.mark.parametrize(
    "ref",
    [
        "zoo:vit_s16@32",
        "zoo:bert_medium@16",
        "zoo:llama_8l512@8",
        "zoo:albert_base@8",
        "zoo:whisper_tiny_encoder@32",
    ],
)
def test_attention_models_run_in_onnxruntime_through_measurement(ref):
    from latlab.datasets.measure import MeasureConfig, measure

    m = measure(ref, MeasureConfig(repeats=3, min_repeats=2, time_budget_s=0.5))
    assert m.median_ms > 0 and len(m.samples_ms) >= 2


def test_onnxruntime_fuses_the_transformer_patterns():
    from collections import Counter

    from latlab.datasets.bench.trace import runtime_mapping

    bert = Counter(n.op for n in runtime_mapping("zoo:bert_medium@16").nodes)
    # post-LN residual + LayerNorm, erf GELU, Q·Kᵀ with its transpose and scale folded in
    assert bert["SkipLayerNormalization"] == 17 and bert["Gelu"] == 8
    assert bert["FusedMatMul"] == 8 and bert["Softmax"] == 8
    llama = Counter(n.op for n in runtime_mapping("zoo:llama_8l512@8").nodes)
    assert llama["SimplifiedLayerNormalization"] == 17  # RMSNorm: 2 per layer + final
    vit = Counter(n.op for n in runtime_mapping("zoo:vit_s16@32").nodes)
    assert vit["LayerNormalization"] >= 24 and vit["Gelu"] == 12


@pytest.mark.parametrize(
    "ref",
    ["zoo:vit_s16@32", "zoo:bert_medium@8", "zoo:llama_8l512@8", "zoo:whisper_tiny_encoder@16"],
)
def test_attention_models_run_in_the_torch_backend_with_the_irs_shapes(ref):
    import torch

    from latlab.datasets.measure.inputs import graph_inputs
    from latlab.encoders.torch_export import to_torch

    g = resolve(ref)
    feeds = graph_inputs(g)
    with torch.inference_mode():
        out = to_torch(g)(*[torch.from_numpy(a) for a in feeds.values()])
    assert tuple(out.shape) == g.layers[-1].output_shape
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    "ref",
    [
        "zoo:vit_s16@32",
        "zoo:swin_s",
        "zoo:bert_medium@8",
        "zoo:albert_base@8",
        "zoo:gpt2_medium@4",
        "zoo:llama_8l512@8",
        "zoo:t5_small_encoder@8",
        "zoo:whisper_tiny_encoder@16",
    ],
)
def test_attention_models_ir_shapes_equal_onnx_inference(ref):
    from ort_helpers import assert_onnx_shapes_match

    assert_onnx_shapes_match(resolve(ref))
