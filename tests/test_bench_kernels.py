"""kernel: references (grammar, canonical form, shapes) and the benchmark suites."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlab.datasets.bench.campaign import padded_references, suite_references
from latlab.datasets.bench.kernels import (
    KernelSpec,
    format_kernel,
    kernel_reference,
    parse_kernel,
    part_layers,
)
from latlab.datasets.bench.suites import (
    MAX_FLOPS,
    SESSION_PROBE,
    kernel_suite,
    layer_types,
    multilayer_suite,
)
from latlab.datasets.references import resolve
from latlab.errors import DataError, NetworkReferenceError


def test_conv_reference_builds_the_layer_it_names() -> None:
    g = resolve("kernel:conv?c=64&h=56&f=128&k=3&s=2")
    (layer,) = g.layers
    assert layer.op == "Conv" and layer.name == "p0_conv"
    assert layer.input_shape == (1, 64, 56, 56)
    assert layer.output_shape == (1, 128, 28, 28)
    assert layer.attrs["kernel"] == (3, 3) and layer.attrs["pads"] == (1, 1, 1, 1)
    assert layer.macs == 64 * 128 * 9 * 28 * 28


def test_part_arguments_override_globals_and_chains_connect() -> None:
    g = resolve("kernel:dwconv(k=5)+bn+relu+conv(k=1,f=96)?c=32&h=20&w=10")
    assert [la.op for la in g.layers] == ["Conv", "BatchNormalization", "Relu", "Conv"]
    dw, _, relu, pw = g.layers
    assert dw.attrs["groups"] == 32 and dw.attrs["kernel"] == (5, 5)
    assert pw.attrs["kernel"] == (1, 1) and pw.output_shape == (1, 96, 20, 10)
    assert pw.inputs == relu.outputs
    assert part_layers(g) == {0: [0], 1: [1], 2: [2], 3: [3]}


def test_binary_ops_read_a_second_input_or_the_chain_input() -> None:
    single = resolve("kernel:add?c=8&h=4")
    assert set(single.inputs) == {"input", "input2"}
    residual = resolve("kernel:padding+conv+add+padding?c=16&h=8&k=3")
    add = residual.layers[2]
    assert add.op == "Add" and add.inputs == ("p1_conv", "p0_padding")  # the chain input
    se = resolve("kernel:mul?c=8&h=5&b=1")
    assert se.inputs["input2"] == (1, 8, 1, 1)
    cat = resolve("kernel:concat?c=8&c2=4&h=5")
    assert cat.layers[0].output_shape == (1, 12, 5, 5)


def test_fc_is_two_dimensional_and_padding_uses_abs_there() -> None:
    g = resolve("kernel:padding+fc+padding?c=50&f=20")
    assert g.inputs["input"] == (1, 50)
    assert [la.op for la in g.layers] == ["Abs", "Gemm", "Abs"]
    assert resolve("kernel:padding+conv+padding?c=4&h=3").layers[0].op == "MaxPool"


def test_canonical_form_sorts_keys_and_drops_defaults() -> None:
    a = kernel_reference("conv", f=128, c=64, h=56, w=56, k=3, s=1, g=1)
    b = format_kernel(parse_kernel("conv?k=3&s=1&h=56&c=64&f=128"))
    assert a == b == "kernel:conv?h=56&c=64&f=128&k=3"
    assert kernel_reference("relu", c=3, h=1) == "kernel:relu?c=3"
    assert resolve(a).reference == a


@pytest.mark.parametrize(
    ("ref", "culprit"),
    [
        ("kernel:conv?h=3", "channels c are required"),
        ("kernel:foo?c=3", "unknown op 'foo'"),
        ("kernel:conv?c=3&q=1", "'q=1'"),
        ("kernel:conv?c=3&k=x", "k must be an integer"),
        ("kernel:conv?c=0", "c=0 out of range"),
        ("kernel:conv(k=3?c=4", "cannot parse part"),
        ("kernel:conv?c=4&c=5", "given twice"),
        ("kernel:conv?c=4&h=8&g=3", "groups=3"),
        ("kernel:conv?c=4&h=2&k=1&s=9", None),  # valid: one output pixel
    ],
)
def test_malformed_references_name_the_culprit(ref: str, culprit: str | None) -> None:
    if culprit is None:
        assert resolve(ref).layers[0].output_shape == (1, 4, 1, 1)
        return
    with pytest.raises(NetworkReferenceError, match="malformed reference") as err:
        resolve(ref)
    assert culprit in str(err.value)
    assert "\n" not in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(["conv", "dwconv", "maxpool", "avgpool"]),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    c=st.integers(1, 64),
    k=st.sampled_from([1, 2, 3, 5, 7]),
    s=st.integers(1, 3),
)
def test_window_layers_have_the_pytorch_output_size(
    op: str, h: int, w: int, c: int, k: int, s: int
) -> None:
    ref = f"kernel:{op}?c={c}&h={h}&w={w}&k={k}&s={s}"
    try:
        g = resolve(ref)
    except NetworkReferenceError:
        return  # windows larger than the padded map are refused, not built wrong
    # convolutions pad "same" (k - 1 in total, PyTorch style), pooling (k - 1) // 2 per side
    total = k - 1 if op in ("conv", "dwconv") else 2 * ((k - 1) // 2)
    out = g.layers[0].output_shape
    assert out[2] == (h + total - k) // s + 1
    assert out[3] == (w + total - k) // s + 1
    # the canonical reference of the same configuration builds the same graph
    assert resolve(format_kernel(parse_kernel(ref.split(":", 1)[1]))).digest == g.digest


def test_padded_references_pad_at_the_input_and_output_shapes() -> None:
    padded, px, py = padded_references("kernel:conv?c=8&h=16&f=32&k=3&s=2")
    assert padded == "kernel:padding+conv+padding?h=16&c=8&f=32&k=3&s=2"
    assert px == "kernel:padding+padding?h=16&c=8"
    assert py == "kernel:padding+padding?h=8&c=32"
    assert padded_references("kernel:fc?c=10&f=5")[2] == "kernel:padding+padding?c=5"


def test_kernel_suite_is_deterministic_and_covers_every_layer_type() -> None:
    refs = kernel_suite(120, seed=3)
    assert refs == kernel_suite(120, seed=3)
    assert refs[0] == SESSION_PROBE and len(refs) == 121 and len(set(refs)) == 121
    ops = {r.split(":")[1].split("?")[0] for r in refs[1:]}
    # every type is its own chain, but gconv: the grouped conv+relu
    assert ops == {"conv+relu" if t == "gconv" else t for t in layer_types()}
    assert any("conv+relu?" in r and "&g=" in r for r in refs)
    for r in refs:
        assert resolve(r).totals.flops <= MAX_FLOPS
    assert kernel_suite(120, seed=4) != refs


def test_multilayer_suite_wraps_chains_in_padding() -> None:
    refs = multilayer_suite(40, seed=1)
    assert len(refs) == 40 and refs == multilayer_suite(40, seed=1)
    for r in refs:
        spec = parse_kernel(r.split(":", 1)[1])
        assert isinstance(spec, KernelSpec)
        assert spec.ops[0] == spec.ops[-1] == "padding" and len(spec.ops) >= 4
    assert suite_references("padding", 10) == kernel_suite(10)[1:]
    with pytest.raises(DataError, match="unknown benchmark suite 'x'"):
        suite_references("x", 3)
