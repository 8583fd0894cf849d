"""The zoo of real architectures: golden MACs/parameters, references, ONNX export and runs."""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets import parse_reference, resolve, zoo
from latlab.errors import NetworkReferenceError
from ort_helpers import run_ort

# Published figures at 224x224: torchvision's model metadata (``Weights.meta["_ops"]`` in
# GFLOPS, which torchvision counts as multiply-accumulates, and ``meta["num_params"]``), shown
# in the "Table of all available classification weights" of
# https://pytorch.org/vision/stable/models.html (torchvision 0.15+; IMAGENET1K_V1 weights).
PUBLISHED: dict[str, tuple[float, int]] = {
    "alexnet": (0.714, 61_100_840),
    "vgg11": (7.609, 132_863_336),
    "vgg16": (15.47, 138_357_544),
    "googlenet": (1.498, 6_624_904),
    "resnet18": (1.814, 11_689_512),
    "resnet34": (3.664, 21_797_672),
    "resnet50": (4.089, 25_557_032),
    "densenet121": (2.834, 7_978_856),
    "squeezenet1_0": (0.819, 1_248_424),
    "squeezenet1_1": (0.349, 1_235_496),
    "shufflenet_v2_x1_0": (0.145, 2_278_604),
    "mobilenet_v2": (0.301, 3_504_872),
    "mobilenet_v3_small": (0.057, 2_542_856),
    "mobilenet_v3_large": (0.217, 5_483_032),
    "mnasnet1_0": (0.314, 4_383_312),
    "efficientnet_b0": (0.386, 5_288_548),
}

FAMILIES = {
    "alexnet": "alexnet",
    "vgg11": "vgg",
    "vgg16": "vgg",
    "googlenet": "googlenet",
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "densenet121": "densenet",
    "squeezenet1_0": "squeezenet",
    "squeezenet1_1": "squeezenet",
    "shufflenet_v2_x1_0": "shufflenet",
    "mobilenet_v2": "mobilenet",
    "mobilenet_v3_small": "mobilenet",
    "mobilenet_v3_large": "mobilenet",
    "mnasnet1_0": "mnasnet",
    "efficientnet_b0": "efficientnet",
}

HEAVY = {"alexnet", "vgg11", "vgg16"}  # 61-138 M parameters: slow to export and load


def test_names_cover_the_required_architectures():
    assert set(zoo.names()) == set(PUBLISHED)
    assert zoo.names() == sorted(zoo.names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macs_and_params_match_published_figures(name):
    gmacs, params = PUBLISHED[name]
    g = resolve(f"zoo:{name}")
    assert g.inputs["input"] == (1, 3, 224, 224)
    assert g.totals.macs == pytest.approx(gmacs * 1e9, rel=0.02)
    assert g.totals.params == pytest.approx(params, rel=0.02)
    assert g.family == FAMILIES[name]
    assert g.meta["model"] == name and g.meta["resolution"] == 224
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


@pytest.mark.parametrize("name", sorted(set(PUBLISHED) - HEAVY))
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
    out = run_ort(g)
    assert out.shape == g.layers[-1].output_shape == (1, 1000)


def test_adaptive_pooling_cases():
    # VGG at 32 px: 1x1 map up-sampled to 7x7; at 448: 14x14 pooled 2x2; at 256: approximate.
    for res, op in ((32, "Resize"), (448, "AveragePool"), (256, "AveragePool")):
        g = resolve(f"zoo:vgg11@{res}")
        before_fc = g.layers[[la.op for la in g.layers].index("Flatten") - 1]
        assert before_fc.op == op and before_fc.output_shape == (1, 512, 7, 7)
    assert all(la.op != "Resize" for la in resolve("zoo:vgg11").layers)
