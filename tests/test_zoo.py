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


def test_names_cover_the_required_architectures():
    assert set(zoo.names()) == set(FAMILIES)
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
