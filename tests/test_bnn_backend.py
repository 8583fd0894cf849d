"""The bit-packed backend: exact agreement with the float reference of the same ±1 network."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlab.datasets.measure import get_backend
from latlab.datasets.measure.bitpacked import (
    _thresholds,
    bn_apply,
    compile_network,
    pack_rows,
    reference_forward,
)
from latlab.encoders.binary import binary_conv, binary_gemm, sign
from latlab.encoders.builder import NetBuilder
from latlab.errors import MeasurementError


def _all_equal(net, seed=0, threads=1):
    prog = compile_network(net, seed=seed, threads=threads)
    x = prog.example_input(seed)
    out = prog.run(x)
    ref = reference_forward(net, x, seed=seed)
    assert out.keys() == ref.keys()
    for k in out:
        assert out[k].dtype == ref[k].dtype
        np.testing.assert_array_equal(out[k], ref[k])
    return out


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 300),
    widths=st.lists(st.integers(1, 200), min_size=1, max_size=3),
    batch=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_binary_mlp_equals_float_reference(k, widths, batch, seed):
    b = NetBuilder("mlp", (batch, k))
    x = sign(b, b.input)
    for w in widths:
        x = sign(b, b.bn(binary_gemm(b, x, w)))
    binary_gemm(b, x, 7)  # an un-fused binary layer at the end: integer outputs
    out = _all_equal(b.build(), seed)
    (y,) = out.values()
    # a K-input ±1 dot product has K's parity and |dot| <= K
    assert np.all(np.abs(y) <= widths[-1]) and np.all((y - widths[-1]) % 2 == 0)


@settings(max_examples=20, deadline=None)
@given(
    c=st.integers(1, 70),
    hw=st.integers(3, 11),
    o=st.integers(1, 40),
    kernel=st.sampled_from([1, 2, 3, 5]),
    stride=st.integers(1, 2),
    same=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_binary_conv_equals_float_reference(c, hw, o, kernel, stride, same, seed):
    kernel = min(kernel, hw)
    b = NetBuilder("cnn", (1, c, hw, hw))
    y = sign(b, b.bn(b.conv(b.input, c, 3)))  # full-precision first layer
    y = sign(b, b.bn(binary_conv(b, y, o, kernel, stride=stride, padding="same" if same else 0)))
    if b.shape(y)[2] >= 2:
        y = b.maxpool(y, 2, 2)
    y = b.flatten(y)
    b.gemm(y, 5)
    _all_equal(b.build(), seed)


@pytest.mark.parametrize(
    "ref",
    [
        "bnn-fcnn:784-512-512-300-10",
        "bnn-cnn:3x32x32-c32-c64-p-c128k5s2-p-f100-f65-10",
        "bnn-cnn:1x28x28-c16k5s2-c33-p-c70k3-f65-f30-10",
    ],
)
def test_reference_networks_agree_exactly(ref):
    _all_equal(ref, seed=3)


def test_threads_do_not_change_results():
    ref = "bnn-cnn:3x16x16-c32-c64-p-f128-10"
    a = _all_equal(ref, threads=1)
    b = _all_equal(ref, threads=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_binary_conv_matches_torch_with_plus_one_padding():
    """A third, independent implementation of the padded ±1 convolution (torch)."""
    import torch
    import torch.nn.functional as F

    from latlab.datasets.measure.bitpacked import make_params

    b = NetBuilder("conv", (2, 5, 7, 7))
    binary_conv(b, sign(b, b.input), 6, 3, stride=2)
    g = b.build()
    prog = compile_network(g, seed=1)
    x = prog.example_input(1)
    (out,) = prog.run(x).values()
    w = make_params(g, 1)[g.layers[1].name]["w"].astype(np.float64)
    xs = np.where(x["input"] >= 0, 1.0, -1.0)
    pt = F.pad(torch.from_numpy(xs), (1, 1, 1, 1), value=1.0)
    expected = F.conv2d(pt, torch.from_numpy(w), stride=2).numpy()
    np.testing.assert_array_equal(out, expected.astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 400), c=st.integers(1, 20), seed=st.integers(0, 1000))
def test_thresholds_reproduce_float_bn_sign(k, c, seed):
    """For every possible dot value, the integer threshold equals Sign(BN(dot)) exactly."""
    rng = np.random.default_rng(seed)
    p = {
        "mean": (rng.standard_normal(c) * np.sqrt(k)).astype(np.float32),
        "scale": (rng.standard_normal(c) * rng.choice([1e-3, 1, 1e3], c)).astype(np.float32),
        "beta": rng.standard_normal(c).astype(np.float32),
    }
    p["scale"][0] = 0.0  # a dead channel: constant output
    sgn, thr = _thresholds(k, p)
    dots = np.arange(-k, k + 1, 2, dtype=np.int32)[:, None]
    expected = (bn_apply(dots.astype(np.float32), p) < 0).astype(np.uint8)
    got = (dots * sgn < thr).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_pack_rows_popcount_identity():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, (4, 130), dtype=np.uint8)
    w = rng.integers(0, 2, (3, 130), dtype=np.uint8)
    pa, pw = pack_rows(a), pack_rows(w)
    assert pa.shape == (4, 3) and pa.dtype == np.uint64
    pop = np.bitwise_count(pa[:, None, :] ^ pw[None, :, :]).sum(-1)
    np.testing.assert_array_equal(pop, (a[:, None, :] != w[None, :, :]).sum(-1))


def test_backend_contract_and_errors():
    backend = get_backend("bitpacked")
    info = backend.info()
    assert info["backend"] == "bitpacked" and info["word_bits"] == 64
    run = backend.prepare("bnn-fcnn:64-128-128-10", 1, 1)
    assert run() is None
    b = NetBuilder("t", (1, 8))
    b.act(b.input, "Tanh")
    with pytest.raises(MeasurementError, match="cannot run op 'Tanh'"):
        backend.prepare(b.build(), 1, 1)
