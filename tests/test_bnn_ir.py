"""Binary layers in the IR, the bnn-fcnn/bnn-cnn references and their ONNX emulation."""

import numpy as np
import pytest

from latlab.datasets.references import onnx_model, parse_reference, resolve
from latlab.datasets.spaces import sample
from latlab.encoders.binary import (
    binary_conv,
    binary_gemm,
    fan_in,
    is_binary,
    operand_bits,
    sign,
    xnorops,
)
from latlab.encoders.builder import NetBuilder
from latlab.errors import NetworkReferenceError


def test_binary_gemm_counts_by_hand():
    b = NetBuilder("t", (1, 1000))
    binary_gemm(b, sign(b, b.input), 300)
    layer = b.layers[-1]
    assert layer.kind == "binfc" and is_binary(layer)
    assert layer.output_shape == (1, 300)
    assert fan_in(layer) == 1000
    assert layer.macs == 300_000 and layer.flops == 0 and layer.params == 300_000
    assert layer.weight_bytes == 300_000 // 8  # one bit per weight
    # O·⌈K/Bus⌉ for every bus width
    for bus, words in ((8, 125), (16, 63), (32, 32), (64, 16), (128, 8), (256, 4)):
        assert xnorops(layer, bus) == 300 * words
    assert operand_bits(layer) == 1000


def test_binary_conv_counts_by_hand():
    b = NetBuilder("t", (1, 64, 32, 32))
    binary_conv(b, sign(b, b.input), 64, 3)
    layer = b.layers[-1]
    assert layer.kind == "binconv" and layer.attrs["pad_value"] == 1.0
    assert layer.output_shape == (1, 64, 32, 32)
    assert fan_in(layer) == 576
    assert layer.macs == 64 * 1024 * 576
    # 576 bits: 9 words of 64, 4.5 -> 5 words of 128, 2.25 -> 3 words of 256
    assert xnorops(layer, 64) == 65536 * 9
    assert xnorops(layer, 128) == 65536 * 5
    assert xnorops(layer, 256) == 65536 * 3
    assert operand_bits(layer) == 1024 * 576
    b2 = NetBuilder("t", (1, 16, 9, 9))
    binary_conv(b2, b2.input, 8, 3, stride=2, padding=0)
    assert b2.layers[-1].output_shape == (1, 8, 4, 4)


def test_bnn_fcnn_structure():
    g = resolve("bnn-fcnn:784-512-512-300-10")
    ops = [layer.op for layer in g.layers]
    assert ops == [
        "Gemm", "BatchNormalization", "Sign",
        "BinaryGemm", "BatchNormalization", "Sign",
        "BinaryGemm", "BatchNormalization", "Sign",
        "Gemm",
    ]  # fmt: skip
    assert g.totals.op_macs["binfc"] == 512 * 512 + 512 * 300
    assert g.totals.op_macs["fc"] == 784 * 512 + 300 * 10
    no_binary = resolve("bnn-fcnn:784-256-10")
    assert not any(is_binary(layer) for layer in no_binary.layers)


def test_bnn_cnn_grammar():
    g = resolve("bnn-cnn:3x32x32-c64-c64k5s2-p-f256-10")
    ops = [(layer.op, layer.output_shape) for layer in g.layers]
    assert ops[0] == ("Conv", (1, 64, 32, 32))  # first layer full precision
    assert ops[3] == ("BinaryConv", (1, 64, 16, 16))  # k5 s2 "same" padding
    assert ops[6] == ("MaxPool", (1, 64, 8, 8))
    assert ops[7] == ("Flatten", (1, 4096))
    assert ops[8] == ("BinaryGemm", (1, 256))
    assert ops[-1] == ("Gemm", (1, 10))
    assert resolve("bnn-cnn:3x32x32-c64-c64-p-10", batch=4).layers[0].output_shape[0] == 4


@pytest.mark.parametrize(
    "ref",
    [
        "bnn-cnn:3x32-c64-10",
        "bnn-cnn:3x32x32-c64-q-10",
        "bnn-cnn:3x32x32-f64-c64-10",
        "bnn-cnn:3x32x32-c64-p-p-p-p-p-p-10",
        "bnn-cnn:3x32x32-c64-x",
        "bnn-fcnn:784",
        "bnn-fcnn:784-a-10",
    ],
)
def test_malformed_references_name_themselves(ref):
    with pytest.raises(NetworkReferenceError, match="malformed reference"):
        parse_reference(ref)


def test_onnx_emulation_runs_with_pm1_weights():
    import onnxruntime as ort
    from onnx import numpy_helper

    ref = "bnn-cnn:1x12x12-c8-c8-p-f16-10"
    model = onnx_model(ref)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    g = resolve(ref)
    for layer in g.layers:
        if is_binary(layer):
            w = inits[f"{layer.name}.w0"]
            assert set(np.unique(w)) <= {-1.0, 1.0}
    ops = [n.op_type for n in model.graph.node]
    assert "Pad" in ops and "Sign" in ops
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 12, 12), dtype=np.float32)
    (y,) = sess.run(None, {"input": x})
    assert y.shape == (1, 10) and np.all(np.isfinite(y))


def test_spaces_are_seeded_and_resolvable():
    a = sample("bnn-fcnn", 5, seed=1)
    assert a == sample("bnn-fcnn", 5, seed=1) and len(set(a)) == 5
    for ref in a + sample("bnn-cnn", 5, seed=2):
        g = resolve(ref)
        assert any(is_binary(layer) for layer in g.layers)
